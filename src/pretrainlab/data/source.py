"""The contract every dataset source fulfils: uint8 images (N, H, W, C) and optional labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pretrainlab.errors import PretrainlabError

# More classes than this is taken for a mistake (a corrupt label file), not a dataset: ImageNet-21k has 21,841,
# and every protocol allocates per-class arrays, so a stray label of 10**10 would ask for hundreds of GB.
MAX_CLASSES = 100_000


def class_ids(labels: np.ndarray) -> np.ndarray:
    """Validated class ids (N,) int64: whole numbers in 0..MAX_CLASSES-1; anything else is a one-line error."""
    labels = np.asarray(labels).reshape(-1)
    valid = f"labels must be class ids, whole numbers 0..{MAX_CLASSES - 1}"
    if labels.dtype.kind not in "uifb":
        raise PretrainlabError(f"{valid}; got {labels.dtype} values")
    if labels.dtype.kind == "f":
        for problem, bad in (("NaN or infinite", ~np.isfinite(labels)), ("not a whole number", labels % 1 != 0)):
            if bad.any():
                index = int(np.flatnonzero(bad)[0])
                raise PretrainlabError(f"{valid}; label {index} is {labels[index].item()} ({problem}; "
                                       f"{int(bad.sum())} such labels)")
    for problem, bad in (("negative", labels < 0), ("absurdly large", labels >= MAX_CLASSES)):
        if len(labels) and bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise PretrainlabError(f"{valid}; label {index} is {labels[index].item()} ({problem}; "
                                   f"{int(bad.sum())} such labels)")
    return labels.astype(np.int64)


@dataclass
class ImageSet:
    """One split of decoded images.

    Args:
        images: uint8 array (N, H, W, C), C is 1 or 3; may be a read-only memory map.
        labels: int64 array (N,) or None for unlabeled images.
        extras: further arrays aligned one to one with the images (N, ...), handed to the method with each
            batch in `Batch.extra[name]`; e.g. "partners": the second image of each pair of a `pairs:` source.
        masks: uint8 array (N, H, W) of per-pixel class ids (255: ignore), for dense protocols; never handed
            to pre-training methods.
        multilabels: uint8 multi-hot array (N, K), for images with several labels each. A 2-D `labels`
            array (N, K > 1) is taken as multi-hot and moved here, so `labels` stays (N,) int64 or None.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    masks: np.ndarray | None = None
    multilabels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim == 3:  # (N, H, W) grayscale arrays are common in npz files
            self.images = self.images[..., None]
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise PretrainlabError(
                f"images must have shape (N, H, W) or (N, H, W, C) with C in (1, 3), got {self.images.shape}"
            )
        if self.images.dtype != np.uint8:
            raise PretrainlabError(f"images must be uint8, got {self.images.dtype}")
        if self.labels is not None and np.ndim(self.labels) == 2 and np.shape(self.labels)[1] > 1:
            if self.multilabels is not None:
                raise PretrainlabError("give multi-hot labels either as 2-D labels or as multilabels, not both")
            self.labels, self.multilabels = None, np.asarray(self.labels)
        if self.labels is not None:
            self.labels = class_ids(self.labels)
            if len(self.labels) != len(self.images):
                raise PretrainlabError(
                    f"{len(self.images)} images but {len(self.labels)} labels: they must match one to one"
                )
        for name, array in self.extras.items():
            if len(array) != len(self.images):
                raise PretrainlabError(
                    f"{len(self.images)} images but {len(array)} '{name}' entries: they must match one to one"
                )
        self._check_dense_and_multilabels()

    def _check_dense_and_multilabels(self) -> None:
        if self.masks is not None and (self.masks.dtype != np.uint8 or self.masks.shape != self.images.shape[:3]):
            raise PretrainlabError(f"masks must be uint8 (N, H, W) matching the images {self.images.shape[:3]}, "
                                   f"got {self.masks.dtype} {self.masks.shape}")
        if self.multilabels is not None:
            multilabels = np.asarray(self.multilabels)
            if multilabels.ndim != 2 or len(multilabels) != len(self.images) or not np.isin(multilabels, (0, 1)).all():
                raise PretrainlabError(f"multi-labels must be a 0/1 array (N={len(self.images)}, K), "
                                       f"got shape {multilabels.shape}")
            self.multilabels = multilabels.astype(np.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> ImageSet:
        labels = None if self.labels is None else self.labels[indices]
        extras = {name: np.ascontiguousarray(array[indices]) for name, array in self.extras.items()}
        masks = None if self.masks is None else np.ascontiguousarray(self.masks[indices])
        multilabels = None if self.multilabels is None else self.multilabels[indices]
        return ImageSet(np.ascontiguousarray(self.images[indices]), labels, extras, masks, multilabels)


@dataclass
class ImageSource:
    """A dataset: a training split, an optional test split, and where it came from.

    `split_note` records how a test split was made when the source had none, so every backbone
    is measured on the same images (DESIGN.md, evaluation conventions).
    """

    spec: str
    train: ImageSet
    test: ImageSet | None = None
    classes: list[str] | None = None
    skipped_files: int = 0
    split_note: str = "given"
    extra: dict = field(default_factory=dict)
    mask_classes: list[str] | None = None  # names of the mask ids (index = id), when the source has masks
    # False where a mirrored image is not an image of the same class (digits, letters): methods then make
    # their views without horizontal flips unless a flip probability is given (issue 9).
    mirror_invariant: bool = True

    def __post_init__(self) -> None:
        if len(self.train) == 0:
            raise PretrainlabError(f"dataset '{self.spec}' holds no images")
        labelled = [split.labels for split in (self.train, self.test) if split is not None and split.labels is not None]
        largest = max((int(labels.max()) for labels in labelled if len(labels)), default=-1)
        if self.classes is not None and largest >= len(self.classes):
            raise PretrainlabError(f"dataset '{self.spec}' names {len(self.classes)} classes but has label {largest}; "
                                   f"labels must be 0..{len(self.classes) - 1}")

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train.images.shape[1]), int(self.train.images.shape[2])

    @property
    def labelled(self) -> bool:
        return self.train.labels is not None

    @property
    def has_masks(self) -> bool:
        return self.train.masks is not None and (self.test is None or self.test.masks is not None)

    @property
    def has_multilabels(self) -> bool:
        return self.train.multilabels is not None and (self.test is None or self.test.multilabels is not None)

    @property
    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        if self.train.labels is None:
            return 0
        return int(self.train.labels.max()) + 1

    def require_labels(self, purpose: str) -> None:
        if not self.labelled:
            raise PretrainlabError(
                f"{purpose} needs labels, but dataset '{self.spec}' is unlabeled; "
                "use a labelled source (folder with one subfolder per class, npz with y_train, builtin, torchvision)"
            )

    def channel_stats(self, max_images: int = 10_000) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units, from an evenly spaced sample of the training split."""
        step = max(1, len(self.train) // max_images)
        sample = self.train.images[::step].astype(np.float32) / 255.0  # (n, H, W, C)
        mean = sample.mean(axis=(0, 1, 2))
        std = sample.std(axis=(0, 1, 2)).clip(min=1e-3)
        return [float(m) for m in mean], [float(s) for s in std]
