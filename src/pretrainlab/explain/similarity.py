"""Representation similarity: debiased minibatch linear CKA between layers of one or two backbones.

Nguyen, Raghu and Kornblith, "Do Wide and Deep Networks Learn the Same Things? Uncovering How Neural Network
Representations Vary with Width and Depth", arXiv 2010.15327: linear CKA estimated over minibatches with the
unbiased HSIC estimator of Song et al. (2012), so the estimate does not depend on the batch size:

    HSIC_1(K, L) = [tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3))
    CKA = mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) mean_i HSIC_1(L_i, L_i))

with K~ the Gram matrix X X' of a minibatch's flattened layer output and its diagonal zeroed. All layer pairs of
a batch are computed at once from the stacked Gram matrices.
"""

from __future__ import annotations

import torch


def gram(features: torch.Tensor) -> torch.Tensor:
    """(n, ...) layer output -> the linear-kernel Gram matrix (n, n) with a zero diagonal, float64."""
    flat = features.reshape(features.shape[0], -1).double()
    kernel = flat @ flat.T
    return kernel - torch.diag(torch.diagonal(kernel))


def hsic_pairs(grams_a: torch.Tensor, grams_b: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC_1 of every pair: grams_a (A, n, n), grams_b (B, n, n) with zero diagonals -> (A, B)."""
    n = grams_a.shape[-1]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 images per batch, got {n}")
    traces = grams_a.reshape(len(grams_a), -1) @ grams_b.reshape(len(grams_b), -1).T  # tr(K L) for symmetric K, L
    sums_a, sums_b = grams_a.sum(dim=(1, 2)), grams_b.sum(dim=(1, 2))  # 1'K1
    rows_a, rows_b = grams_a.sum(dim=2), grams_b.sum(dim=2)  # K1: (A, n), (B, n)
    middle = sums_a[:, None] * sums_b[None, :] / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (rows_a @ rows_b.T)  # 1'KL1 = (K1).(L1)
    return (traces + middle - cross) / (n * (n - 3))


class MinibatchCKA:
    """Accumulates HSIC over minibatches for layers A (rows) against layers B (columns)."""

    def __init__(self) -> None:
        self.cross: torch.Tensor | None = None  # (A, B)
        self.self_a: torch.Tensor | None = None  # (A,)
        self.self_b: torch.Tensor | None = None  # (B,)
        self.batches = 0

    def update(self, layers_a: list[torch.Tensor], layers_b: list[torch.Tensor]) -> None:
        """One minibatch: each layer's output (n, ...) on the same n images."""
        grams_a = torch.stack([gram(x) for x in layers_a])
        grams_b = torch.stack([gram(x) for x in layers_b])
        cross = hsic_pairs(grams_a, grams_b)
        self_a = torch.diagonal(hsic_pairs(grams_a, grams_a))
        self_b = torch.diagonal(hsic_pairs(grams_b, grams_b))
        if self.cross is None:
            self.cross, self.self_a, self.self_b = cross, self_a, self_b
        else:
            self.cross, self.self_a, self.self_b = self.cross + cross, self.self_a + self_a, self.self_b + self_b
        self.batches += 1

    def value(self) -> torch.Tensor:
        """(A, B) CKA; the 1/k of the means cancels."""
        if self.cross is None:
            raise ValueError("no minibatch was added")
        denominator = (self.self_a[:, None] * self.self_b[None, :]).clamp(min=1e-30).sqrt()
        return (self.cross / denominator).float()


def minibatch_cka(batches_a: list[list[torch.Tensor]], batches_b: list[list[torch.Tensor]]) -> torch.Tensor:
    """CKA (A, B) from per-batch layer outputs of two networks on the same images."""
    accumulator = MinibatchCKA()
    for layers_a, layers_b in zip(batches_a, batches_b, strict=True):
        accumulator.update(layers_a, layers_b)
    return accumulator.value()
