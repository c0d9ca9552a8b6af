"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", arXiv 2002.05709.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.distributed import gather_with_grad, rank
from pretrainlab.losses.full_precision import in_full_precision


class NTXentLoss(nn.Module):
    """For 2N embeddings, each view's positive is the other view of its image; the 2N - 2 others are negatives.

    Under DDP, embeddings are gathered from every rank (with gradients), so the negatives are the whole
    global batch and the loss equals the single-process loss on that batch.

    Args:
        temperature: softmax temperature tau > 0 (0.5 in SimCLR's CIFAR experiments, 0.1 on ImageNet).
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    @in_full_precision
    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """z_a, z_b: (B, D) projections of the two views of the same B images -> scalar loss."""
        local_batch = z_a.shape[0]
        z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
        all_a, all_b = gather_with_grad(z_a), gather_with_grad(z_b)  # (W * B, D)
        candidates = torch.cat([all_a, all_b], dim=0)  # (2 W B, D)
        queries = torch.cat([z_a, z_b], dim=0)  # (2 B, D), this rank's views
        logits = queries @ candidates.T / self.temperature  # (2 B, 2 W B)
        total = all_a.shape[0]
        offset = rank() * local_batch
        own = torch.arange(local_batch, device=z_a.device) + offset  # index of each image in the gathered batch
        self_index = torch.cat([own, own + total])  # where each query sits among the candidates
        positive_index = torch.cat([own + total, own])
        logits = logits.masked_fill(
            F.one_hot(self_index, 2 * total).bool(), float("-inf")
        )  # a view is never its own negative
        return F.cross_entropy(logits, positive_index)
