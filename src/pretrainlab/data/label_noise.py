"""Synthetic label noise with an exact rate per class, for the noisy-labels protocol and noisy pre-training.

Data, not evaluation: the noisy-labels protocol corrupts a probe's labels with it and supervised
pre-training (`--option label_noise=0.2`) its training labels.

- symmetric: of each class c, round(rate * n_c) labels (half up), drawn by the seed, are replaced
  by a class drawn uniformly from the K - 1 other classes, so the share of wrong labels is the
  rate itself (not rate * (K - 1) / K, as when the new class may be the true one).
- asymmetric: the same labels are flipped to the next class, c -> (c + 1) mod K: a fixed class
  permutation, the "pair flipping" of Co-teaching (Han et al., arXiv 1804.06872), which works on
  any label set, unlike the CIFAR-10 mapping (truck -> automobile, ...). At a rate of 50 % or more
  the wrong class becomes the majority label of every class, so no method can recover the task;
  the protocol's default stops at 40 % for it.
"""

from __future__ import annotations

import re

import numpy as np

from pretrainlab.errors import PretrainlabError

KINDS = {"sym": "symmetric", "asym": "asymmetric"}
NAME_PATTERN = re.compile(r"^(sym|asym)(\d+(?:\.\d+)?)%?$")


def parse_noise(name: str) -> tuple[str, float]:
    """"sym40" or "asym20%" -> ("sym", 0.4)."""
    match = NAME_PATTERN.match(str(name).strip())
    if match is None or not 0 < float(match.group(2)) < 100:
        raise PretrainlabError(f"a noise setting looks like sym40 or asym20 (kind sym|asym, rate in percent "
                               f"between 0 and 100), got {name!r}")
    return match.group(1), float(match.group(2)) / 100


def flipped_indices(labels: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of round(rate * n_c) (half up) images of every class c, drawn by `rng`."""
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = int(np.floor(rate * len(members) + 0.5))
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


def noisy_labels(labels: np.ndarray, kind: str, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """A noisy copy of `labels` (N,) int64: `kind` "sym" or "asym", `rate` in (0, 1)."""
    if kind not in KINDS:
        raise PretrainlabError(f"unknown noise kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if num_classes < 2:
        raise PretrainlabError(f"label noise needs at least 2 classes, got {num_classes}")
    rng = np.random.default_rng(seed)
    noisy = np.array(labels, dtype=np.int64, copy=True)
    flips = flipped_indices(noisy, rate, rng)
    # symmetric: a shift of 1..K-1 classes, uniform, never the true class; asymmetric: always the next class
    shift = rng.integers(1, num_classes, size=len(flips)) if kind == "sym" else np.ones(len(flips), dtype=np.int64)
    noisy[flips] = (noisy[flips] + shift) % num_classes
    return noisy
