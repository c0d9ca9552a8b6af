"""A fixed, stratified train/test split for sources that come without a test split."""

from __future__ import annotations

import numpy as np

from pretrainlab.data.source import ImageSource

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def stratified_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (train_idx, test_idx), taking round(test_fraction * n_c) images of every class c.

    A class with at least two images always keeps one image on each side, so no class is missing
    from either split.
    """
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        n_test = int(round(test_fraction * len(members)))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))


def ensure_test_split(source: ImageSource) -> ImageSource:
    """Gives a labelled source without a test split a fixed stratified one, recorded in `split_note`.

    A source whose only annotations are masks or multi-labels gets a fixed random one (no single
    class to stratify by). Pre-training then sees only the training part, so evaluation images stay unseen.
    """
    annotated = source.train.masks is not None or source.train.multilabels is not None
    if source.test is not None or not (source.labelled or annotated):
        return source
    if source.labelled:
        train_idx, test_idx = stratified_indices(source.train.labels, TEST_FRACTION, SPLIT_SEED)
        kind = "stratified"
    else:
        train_idx, test_idx = stratified_indices(np.zeros(len(source.train), dtype=np.int64), TEST_FRACTION,
                                                 SPLIT_SEED)
        kind = "random"
    full = source.train
    source.train, source.test = full.subset(train_idx), full.subset(test_idx)
    source.split_note = f"{kind} {int(TEST_FRACTION * 100)}% test split, seed {SPLIT_SEED}"
    return source
