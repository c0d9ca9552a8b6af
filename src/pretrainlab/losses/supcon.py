"""The supervised contrastive loss: every other view of the same class is a positive.

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan, "Supervised Contrastive Learning",
arXiv 2004.11362.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.distributed import gather_no_grad, gather_with_grad, rank
from pretrainlab.losses.full_precision import in_full_precision


class SupConLoss(nn.Module):
    """L_out of the paper (its equation 2): for each anchor i,

        -1/|P(i)| sum_{p in P(i)} log( exp(z_i . z_p / tau) / sum_{a != i} exp(z_i . z_a / tau) ),

    where P(i) holds the other views with the anchor's label. Anchors are this rank's views; the candidates
    are the views of the global batch, gathered with gradients, so the mean of the per-rank losses is the
    single-process loss whenever every anchor has a positive (always true with 2 or more views).

    Args:
        temperature: tau > 0 (0.1 in the paper's CIFAR experiments).
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    @in_full_precision
    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """features: (B, V, D) projections of V views of B images; labels: (B,) int -> scalar loss."""
        if features.ndim != 3 or labels.shape != features.shape[:1]:
            raise ValueError(f"features must be (B, V, D) and labels (B,), got {tuple(features.shape)} and "
                             f"{tuple(labels.shape)}")
        local_batch, views = features.shape[:2]
        z = F.normalize(features.float(), dim=2)
        anchors = z.transpose(0, 1).reshape(views * local_batch, -1)  # (V B, D), view-major
        gathered = [gather_with_grad(z[:, view]) for view in range(views)]  # V x (W B, D)
        candidates = torch.cat(gathered)  # (V W B, D)
        global_batch = gathered[0].shape[0]
        all_labels = gather_no_grad(labels)  # (W B,)
        anchor_labels, candidate_labels = labels.repeat(views), all_labels.repeat(views)
        own = torch.arange(local_batch, device=z.device) + rank() * local_batch
        self_index = torch.cat([own + view * global_batch for view in range(views)])  # (V B,)
        is_self = F.one_hot(self_index, candidates.shape[0]).bool()  # (V B, V W B)
        logits = (anchors @ candidates.T / self.temperature).masked_fill(is_self, float("-inf"))
        log_probability = F.log_softmax(logits, dim=1)
        positives = (anchor_labels[:, None] == candidate_labels[None, :]) & ~is_self
        counts = positives.sum(dim=1)  # (V B,)
        summed = torch.where(positives, log_probability, torch.zeros_like(log_probability)).sum(dim=1)
        has_positive = counts > 0
        if not has_positive.any():
            return logits.new_zeros(()) + 0.0 * anchors.sum()  # no positive pair: keep the graph, no signal
        return -(summed[has_positive] / counts[has_positive]).mean()
