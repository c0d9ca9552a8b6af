"""InfoNCE: classify each query's positive key among negatives (MoCo's contrastive loss).

Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding", arXiv 1807.03748;
used by MoCo (He et al., arXiv 1911.05722), MoCo v2 (arXiv 2003.04297) and MoCo v3 (arXiv 2104.02057).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.distributed import gather_no_grad, gather_with_grad, rank
from pretrainlab.losses.full_precision import in_full_precision


class InfoNCELoss(nn.Module):
    """Cross-entropy of cosine similarities / temperature, the positive key being the right class.

    Two ways to find negatives:
    - `negatives` given (MoCo v1/v2): each query scores its own key against the K negatives (a queue);
    - `negatives` None (MoCo v3): the keys of the whole global batch are the candidates; keys are
      gathered from every DDP rank, with gradients when they have any, so the loss equals the
      single-process loss on the global batch.

    Args:
        temperature: softmax temperature tau > 0 (0.2 in MoCo v2, 0.2 for ViTs and 1.0 for ResNets in MoCo v3).
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    @in_full_precision
    def forward(self, queries: torch.Tensor, keys: torch.Tensor, negatives: torch.Tensor | None = None) -> torch.Tensor:
        """queries, keys: (B, D), row i of each from the same image; negatives: (K, D) or None -> scalar."""
        queries, keys = F.normalize(queries, dim=1), F.normalize(keys, dim=1)
        if negatives is not None:
            positive = (queries * keys).sum(dim=1, keepdim=True)  # (B, 1)
            negative = queries @ F.normalize(negatives, dim=1).to(queries.dtype).T  # (B, K)
            logits = torch.cat([positive, negative], dim=1) / self.temperature  # (B, 1 + K)
            targets = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
            return F.cross_entropy(logits, targets)
        all_keys = gather_with_grad(keys) if keys.requires_grad else gather_no_grad(keys)  # (W * B, D)
        logits = queries @ all_keys.T / self.temperature  # (B, W * B)
        targets = torch.arange(len(queries), device=queries.device) + rank() * len(queries)
        return F.cross_entropy(logits, targets)
