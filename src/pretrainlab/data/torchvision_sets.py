"""`torchvision:NAME[:ROOT]`: torchvision's datasets, downloaded only when the user asks (`--download`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError, unknown_name_message

TORCHVISION_SETS = ("CIFAR10", "CIFAR100", "FashionMNIST", "MNIST", "STL10")
DEFAULT_ROOT = Path.home() / ".cache" / "pretrainlab" / "torchvision"


def _to_image_set(dataset: object, name: str) -> ImageSet:
    if name == "STL10":
        images = dataset.data.transpose(0, 2, 3, 1)  # (N, 3, 96, 96) -> (N, 96, 96, 3)
        labels = np.asarray(dataset.labels)
    else:
        images = np.asarray(dataset.data)
        labels = np.asarray(dataset.targets)
    return ImageSet(np.ascontiguousarray(images, dtype=np.uint8), labels)


def load_torchvision(argument: str, download: bool = False, **_: object) -> ImageSource:
    import torchvision.datasets as tv

    name, _, root_text = argument.partition(":")
    if name not in TORCHVISION_SETS:
        raise PretrainlabError(unknown_name_message("torchvision dataset", name, TORCHVISION_SETS))
    root = Path(root_text).expanduser() if root_text else DEFAULT_ROOT
    dataset_class = getattr(tv, name)
    try:
        if name == "STL10":
            train = dataset_class(str(root), split="train", download=download)
            test = dataset_class(str(root), split="test", download=download)
        else:
            train = dataset_class(str(root), train=True, download=download)
            test = dataset_class(str(root), train=False, download=download)
    except RuntimeError as error:
        hint = "" if download else "; add --download to fetch it"
        raise PretrainlabError(f"torchvision {name} is not in {root} ({error}){hint}") from None
    classes = list(getattr(train, "classes", [])) or None
    return ImageSource(
        f"torchvision:{argument}", _to_image_set(train, name), _to_image_set(test, name), classes=classes,
        mirror_invariant=name != "MNIST",  # a mirrored digit is not a digit
    )
