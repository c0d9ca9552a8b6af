"""Class-balanced subsets: label fractions (few-label protocols) and smaller fixed splits.

Smaller, fixed evaluation splits let a whole gauntlet fit a CPU budget while staying comparable.

The subset is drawn once per split, class-balanced, with a fixed seed (not the protocol seed): every
backbone and every seed sees the same images. Its size is part of the dataset spec the results carry,
e.g. `npz:fashion_mnist.npz[train:6000]`, so a comparison never mixes it with the full split.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.data.splits import stratified_indices
from pretrainlab.errors import PretrainlabError

SUBSET_SEED = 0


def subset_indices(images: ImageSet, limit: int, seed: int = SUBSET_SEED) -> np.ndarray:
    """About `limit` indices, the same share of every class (random ones for unlabeled images), sorted."""
    if images.labels is None:
        return np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))
    _, kept = stratified_indices(images.labels, limit / len(images), seed)
    return kept


def limit_source(source: ImageSource, max_train: int | None = None, max_test: int | None = None) -> ImageSource:
    """`source` with at most about `max_train` training and `max_test` test images (None: all of a split)."""
    changes: dict[str, object] = {}
    suffixes = []
    for split, limit in (("train", max_train), ("test", max_test)):
        images = getattr(source, split)
        if limit is None or images is None or limit >= len(images):
            continue
        if limit < 1:
            raise PretrainlabError(f"--max-{split} must be at least 1, got {limit}")
        kept = images.subset(subset_indices(images, limit))
        if images.labels is not None and len(np.unique(kept.labels)) < len(np.unique(images.labels)):
            raise PretrainlabError(f"--max-{split} {limit} leaves a class of '{source.spec}' without images; "
                                   "allow at least one image per class")
        changes[split] = kept
        suffixes.append(f"{split}:{len(kept)}")
    if not changes:
        return source
    note = f"{source.split_note}; class-balanced subset ({', '.join(suffixes)}, seed {SUBSET_SEED})"
    return dataclasses.replace(source, spec=f"{source.spec}[{','.join(suffixes)}]", split_note=note, **changes)


def fraction_label(fraction: float) -> str:
    """0.01 -> "1%", 0.005 -> "0.5%"."""
    return f"{fraction * 100:g}%"


def class_balanced_subset(labels: np.ndarray, fraction: float, seed: int,
                          class_names: list[str] | None = None) -> np.ndarray:
    """Sorted indices of round(fraction * n_c) images (half up) of every class c present in `labels` (N,).

    Raises PretrainlabError when the fraction leaves a class without any image.
    """
    if not 0 < fraction <= 1:
        raise PretrainlabError(f"a label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        order = members[rng.permutation(len(members))]  # one permutation per class: fractions nest
        count = int(np.floor(fraction * len(members) + 0.5))  # half rounds up (Python's round(0.5) is 0)
        if count == 0:
            name = f"{cls} ('{class_names[cls]}')" if class_names and cls < len(class_names) else f"{cls}"
            raise PretrainlabError(f"label fraction {fraction_label(fraction)} leaves class {name} with no training "
                                   f"image (it has {len(members)}); use a fraction of at least "
                                   f"{fraction_label(1 / len(members))}")
        chosen.append(order[:count])
    return np.sort(np.concatenate(chosen))


def random_fraction_subset(count: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of round(fraction * count) of `count` images (at least 2), nested across fractions for a seed.

    For multi-label data, where no single class defines a balance to keep: one permutation per seed, and a
    fraction takes its first images, so with one seed the 1 % subset lies inside the 10 % one.
    """
    if not 0 < fraction <= 1:
        raise PretrainlabError(f"a label fraction must be in (0, 1], got {fraction}")
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[: max(2, int(np.floor(fraction * count + 0.5)))])
