"""Pixel-reconstruction losses of masked image modelling, computed on hidden patches only."""

from __future__ import annotations

import torch

from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.full_precision import in_full_precision

DISTANCES = ("squared", "absolute")


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch standardisation, MAE's `norm_pix_loss` target: (B, N, P) -> (B, N, P)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


@in_full_precision
def masked_patch_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      normalize_target: bool, distance: str = "squared") -> torch.Tensor:
    """Mean per-pixel error over masked patches only.

    Args:
        prediction, target: (B, N, P) per-patch pixels.
        mask: (B, N) bool, True = hidden; visible patches do not count.
        normalize_target: standardise each target patch first (MAE, SparK).
        distance: "squared" (MAE, SparK, CAE) or "absolute" (SimMIM's L1).
    """
    if distance not in DISTANCES:
        raise PretrainlabError(f"unknown reconstruction distance '{distance}'; valid: {', '.join(DISTANCES)}")
    if normalize_target:
        target = normalize_patches(target)
    difference = prediction - target
    per_patch = (difference.pow(2) if distance == "squared" else difference.abs()).mean(dim=-1)  # (B, N)
    weights = mask.to(per_patch.dtype)
    return (per_patch * weights).sum() / weights.sum().clamp(min=1.0)
