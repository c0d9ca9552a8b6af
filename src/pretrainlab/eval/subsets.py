"""Smaller, fixed evaluation splits, so a whole gauntlet fits a CPU budget while staying comparable.

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
