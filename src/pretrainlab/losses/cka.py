"""Linear centred kernel alignment (CKA) between two layers' activations on the same batch, and 1 - CKA as a
representational distance.

Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations Revisited", arXiv 1905.00414.
For activations X (B, p) and Y (B, q), with K = Xc Xc^T and L = Yc Yc^T the Gram matrices of the column-centred
activations, linear CKA = <K, L>_F / (||K||_F ||L||_F): invariant to orthogonal transforms and isotropic scaling
of either representation, and comparable across widths, so layers of different architectures can be aligned.
Computed from the B x B Gram matrices (cheap when a layer has more features than the batch has images).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pretrainlab.losses.full_precision import in_full_precision


def linear_cka(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x (B, ...) and y (B, ...), flattened per example -> CKA in [0, 1], a scalar (differentiable)."""
    x = x.flatten(1).float()
    y = y.flatten(1).float()
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    gram_x, gram_y = x @ x.T, y @ y.T  # (B, B)
    return (gram_x * gram_y).sum() / (gram_x.norm() * gram_y.norm() + eps)


class CKADistance(nn.Module):
    """mean over layer pairs of 1 - CKA(target_l, guide_m(l)); pairs are given as two equal-length lists."""

    @in_full_precision
    def forward(self, targets: list[torch.Tensor], guides: list[torch.Tensor]) -> torch.Tensor:
        if len(targets) != len(guides) or not targets:
            raise ValueError(f"CKADistance needs equal, non-empty lists, got {len(targets)} and {len(guides)}")
        return torch.stack([1.0 - linear_cka(t, g) for t, g in zip(targets, guides, strict=True)]).mean()
