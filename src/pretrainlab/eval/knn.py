"""Weighted k-nearest-neighbour classification on frozen features.

Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
arXiv 1805.01978: cosine similarity, the k nearest training images vote with weight exp(sim / T).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pretrainlab.errors import PretrainlabError

DEFAULT_TEMPERATURE = 0.07


def knn_options(options: Mapping[str, Any]) -> tuple[int | None, float]:
    """(k or None for the default, temperature) from protocol options; k >= 1 and T > 0, else a one-line error
    (k=0 used to become the default quietly, and a negative k ended in a traceback)."""
    k, temperature = options.get("k"), options.get("temperature", DEFAULT_TEMPERATURE)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise PretrainlabError(f"kNN k must be a whole number >= 1 (neighbours that vote), got {k!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
        raise PretrainlabError(f"kNN temperature must be a number > 0 (votes weigh exp(sim / T)), got {temperature!r}")
    return k, float(temperature)


def default_k(train_labels: torch.Tensor) -> int:
    """k=200 (the CIFAR convention) needs ~1,000+ images per class; with fewer it drowns the neighbours."""
    smallest_class = int(torch.bincount(train_labels).min()) if len(train_labels) else 0
    return 200 if smallest_class >= 1000 else 20


def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, k: int,
                temperature: float = DEFAULT_TEMPERATURE, num_classes: int | None = None,
                chunk: int = 1024) -> torch.Tensor:
    """Class scores (M, num_classes) for test features (M, D) from train features (N, D) and labels (N,)."""
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, len(train_features))
    train = F.normalize(train_features.float(), dim=1)
    scores = []
    for start in range(0, len(test_features), chunk):
        query = F.normalize(test_features[start : start + chunk].float(), dim=1)
        similarity, index = (query @ train.T).topk(k, dim=1)  # (m, k)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(query), num_classes)
        votes.scatter_add_(1, train_labels[index], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, k: int | None = None,
                 temperature: float = DEFAULT_TEMPERATURE) -> tuple[float, int]:
    """Top-1 accuracy in percent and the k used."""
    k = k or default_k(train_labels)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    scores = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes)
    accuracy = float((scores.argmax(dim=1) == test_labels).float().mean()) * 100
    return accuracy, k


def as_labels(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels, dtype=np.int64))
