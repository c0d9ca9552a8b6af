"""Progressive re-parameterised BatchNorm (PRepBN), SLAB's replacement for LayerNorm in transformers.

Guo, Chen, Tang, Wang, "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive
Re-parameterized Batch Normalization", arXiv 2405.11582. PRepBN(x) = lambda LN(x) + (1 - lambda) RepBN(x) with
RepBN(x) = BN(x) + alpha x over the channels of tokens; lambda falls from 1 to 0 during training, and at
inference RepBN is a per-channel affine map that folds into the next linear layer.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class RepBN(nn.Module):
    """BN(x) + alpha * x over the channels of tokens (B, N, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.alpha = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2) + self.alpha * x

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The evaluation-mode map as x * scale + shift, scale and shift (D,)."""
        gain = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        return gain + self.alpha, self.bn.bias - self.bn.running_mean * gain


class ChannelAffine(nn.Module):
    """x * scale + shift per channel: a folded RepBN where no linear layer follows."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone())
        self.shift = nn.Parameter(shift.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class ProgressiveNorm(nn.Module):
    """PRepBN: ln_weight * LN(x) + (1 - ln_weight) * RepBN(x) in training, RepBN(x) in evaluation.

    Both branches run in training whatever the weight, so every parameter gets a gradient (DDP needs that).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.rep_bn = RepBN(dim)
        self.ln_weight = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.rep_bn(x)
        return self.ln_weight * self.layer_norm(x) + (1.0 - self.ln_weight) * self.rep_bn(x)

    def fuse(self) -> ChannelAffine:
        return ChannelAffine(*self.rep_bn.affine())


@torch.no_grad()
def fold_affine_into_linear(norm: ProgressiveNorm, linear: nn.Linear) -> None:
    """linear(x * scale + shift) == linear'(x): W' = W diag(scale), b' = b + W shift."""
    scale, shift = norm.rep_bn.affine()
    if linear.bias is None:
        linear.bias = nn.Parameter(torch.zeros(linear.out_features, device=linear.weight.device))
    linear.bias.add_(linear.weight @ shift)
    linear.weight.mul_(scale.unsqueeze(0))
