"""The masked token modelling loss: cross-entropy over the codes of hidden grid cells (SeiT++, arXiv 2312.10105)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrainlab.losses.full_precision import in_full_precision


@in_full_precision
def masked_token_loss(logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor,
                      smoothing: float = 0.1) -> torch.Tensor:
    """Label-smoothed cross-entropy averaged over hidden cells only.

    Args:
        logits: (B, N, K) scores of the K codes at every cell.
        codes: (B, N) int64 true codes.
        mask: (B, N) bool, True = hidden; visible cells do not count.
        smoothing: share s of the target spread uniformly: loss = (1 - s) * NLL + s * mean over codes of -log p.
    """
    if not 0 <= smoothing < 1:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    # (B, N): cross_entropy's label smoothing is exactly this mix
    per_cell = F.cross_entropy(logits.float().transpose(1, 2), codes, reduction="none", label_smoothing=smoothing)
    weights = mask.to(per_cell.dtype)
    return (per_cell * weights).sum() / weights.sum().clamp(min=1.0)
