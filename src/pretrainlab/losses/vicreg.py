"""The VICReg loss: variance, invariance and covariance regularisation of two embeddings.

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", arXiv 2105.04906.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.distributed import gather_with_grad
from pretrainlab.losses.barlow_twins import off_diagonal
from pretrainlab.losses.full_precision import in_full_precision


def variance_term(z: torch.Tensor, target_std: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """(N, D) -> mean over dimensions of max(0, gamma - sqrt(Var(z_j) + eps)), the hinge on the std."""
    std = torch.sqrt(z.var(dim=0) + eps)  # (D,), unbiased as in the paper's Var
    return F.relu(target_std - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """(N, D) -> sum of squared off-diagonal covariances divided by D."""
    centred = z - z.mean(dim=0)
    covariance = centred.T @ centred / (z.shape[0] - 1)  # (D, D)
    return off_diagonal(covariance).pow(2).sum() / z.shape[1]


class VICRegLoss(nn.Module):
    """lambda * s(Z, Z') + mu * [v(Z) + v(Z')] / 2 + nu * [c(Z) + c(Z')].

    s is the mean squared distance between the two views, v the variance hinge, c the covariance penalty.
    The variance term is averaged over the two branches as in the authors' code, with which the paper's
    coefficients (25, 25, 1) were tuned. Under DDP the embeddings are gathered from every rank (with
    gradients), so every rank computes the loss of the global batch.

    Args:
        invariance_weight: lambda (25 in the paper).
        variance_weight: mu (25 in the paper).
        covariance_weight: nu (1 in the paper).
        target_std: gamma, the standard deviation each dimension is pushed to (1).
        eps: added to the variance before the square root (1e-4).
    """

    def __init__(self, invariance_weight: float = 25.0, variance_weight: float = 25.0, covariance_weight: float = 1.0,
                 target_std: float = 1.0, eps: float = 1e-4) -> None:
        super().__init__()
        weights = {"invariance_weight": invariance_weight, "variance_weight": variance_weight,
                   "covariance_weight": covariance_weight}
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if target_std <= 0 or eps <= 0:
            raise ValueError(f"target_std and eps must be > 0, got {target_std} and {eps}")
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.target_std = target_std
        self.eps = eps

    @in_full_precision
    def terms(self, z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """z_a, z_b: (B, D) embeddings of two views of the same images -> the three unweighted terms."""
        if z_a.shape != z_b.shape or z_a.ndim != 2:
            raise ValueError(f"z_a and z_b must both be (B, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        all_a, all_b = gather_with_grad(z_a.float()), gather_with_grad(z_b.float())  # (N, D), N = global batch
        if all_a.shape[0] < 2:
            raise ValueError("VICReg needs at least 2 images in the (global) batch to measure variance")
        return {
            "invariance": F.mse_loss(all_a, all_b),
            "variance": (variance_term(all_a, self.target_std, self.eps)
                         + variance_term(all_b, self.target_std, self.eps)) / 2,
            "covariance": covariance_term(all_a) + covariance_term(all_b),
        }

    def combine(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of `terms` (so a method can log the terms without computing them twice)."""
        return (self.invariance_weight * terms["invariance"] + self.variance_weight * terms["variance"]
                + self.covariance_weight * terms["covariance"])

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """z_a, z_b: (B, D) -> scalar loss."""
        return self.combine(self.terms(z_a, z_b))
