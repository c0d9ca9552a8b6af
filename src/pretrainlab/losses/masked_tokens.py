"""The masked token modelling loss: cross-entropy over the codes of hidden grid cells (SeiT++, arXiv 2312.10105)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, N, K)
    nll = -log_probs.gather(-1, codes.unsqueeze(-1)).squeeze(-1)  # (B, N)
    per_cell = (1 - smoothing) * nll - smoothing * log_probs.mean(dim=-1)
    weights = mask.to(per_cell.dtype)
    return (per_cell * weights).sum() / weights.sum().clamp(min=1.0)
