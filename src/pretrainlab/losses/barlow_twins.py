"""The Barlow Twins redundancy-reduction loss on the cross-correlation of two batch-normalised embeddings.

Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
arXiv 2103.03230.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pretrainlab.distributed import all_reduce_with_grad, world_size
from pretrainlab.losses.full_precision import in_full_precision


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square (D, D) matrix as a flat (D * D - D,) tensor."""
    size = matrix.shape[0]
    return matrix.flatten()[:-1].view(size - 1, size + 1)[:, 1:].flatten()


def global_batch_norm(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B, D) -> (B, D) standardised per dimension with the mean and (biased) variance of the global batch.

    This is BatchNorm1d(affine=False) in training mode; under DDP the statistics are summed over ranks with
    gradients, so the result equals normalising the concatenated batch in one process.
    """
    count = z.shape[0] * world_size()
    mean = all_reduce_with_grad(z.sum(dim=0)) / count  # (D,)
    centred = z - mean
    variance = all_reduce_with_grad(centred.pow(2).sum(dim=0)) / count  # (D,)
    return centred / torch.sqrt(variance + eps)


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Empirical cross-correlation (D, D) of two (B, D) embeddings over the global batch."""
    count = z_a.shape[0] * world_size()
    return all_reduce_with_grad(global_batch_norm(z_a).T @ global_batch_norm(z_b)) / count


class BarlowTwinsLoss(nn.Module):
    """sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2 for the cross-correlation C of the two views.

    The on-diagonal term makes the embedding invariant to the augmentations, the off-diagonal term
    decorrelates its dimensions. Every rank returns the same global loss under DDP (see `all_reduce_with_grad`).

    Args:
        off_diagonal_weight: lambda (0.0051 in the paper, for 8192 dimensions).
        scale: a factor on the whole loss (1 in the paper; some small-data recipes use 0.1 with a larger lr).
    """

    def __init__(self, off_diagonal_weight: float = 0.0051, scale: float = 1.0) -> None:
        super().__init__()
        if off_diagonal_weight < 0:
            raise ValueError(f"off_diagonal_weight (lambda) must be >= 0, got {off_diagonal_weight}")
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.off_diagonal_weight = off_diagonal_weight
        self.scale = scale

    @in_full_precision
    def terms(self, z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """z_a, z_b: (B, D) embeddings of two views of the same B images -> the unweighted terms."""
        if z_a.shape != z_b.shape or z_a.ndim != 2:
            raise ValueError(f"z_a and z_b must both be (B, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        correlation = cross_correlation(z_a.float(), z_b.float())  # (D, D); fp32 keeps 1 - C_ii accurate
        return {"on_diagonal": (torch.diagonal(correlation) - 1).pow(2).sum(),
                "off_diagonal": off_diagonal(correlation).pow(2).sum()}

    def combine(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of `terms` (so a method can log the terms without computing them twice)."""
        return self.scale * (terms["on_diagonal"] + self.off_diagonal_weight * terms["off_diagonal"])

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """z_a, z_b: (B, D) -> scalar loss."""
        return self.combine(self.terms(z_a, z_b))
