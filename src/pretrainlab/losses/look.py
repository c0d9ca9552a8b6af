"""The leave-one-out k-nearest-neighbour loss of LOOK.

Feng, Jiang, Tang, Jin, Gao, "Rethinking Supervised Pre-training for Better Downstream Transferring",
arXiv 2110.06014.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.losses.full_precision import in_full_precision


class LeaveOneOutKNNLoss(nn.Module):
    """-log p(y_i | x_i) of a weighted kNN classifier that leaves the image itself out of its neighbours.

    With N_k(i) the k candidates most similar to image i (cosine similarity s, i itself excluded),

        p(y_i | x_i) = sum_{j in N_k(i), y_j = y_i} exp(s_ij / tau) / sum_{j in N_k(i)} exp(s_ij / tau).

    Only the k nearest neighbours vote, so an image is pulled towards the same-class images already near
    it (and pushed from the other-class ones among them), not towards its whole class: a class may keep
    several modes. When none of the k shares the label, the nearest same-class candidate joins the voters,
    so the loss stays finite and the image moves towards its closest mode (our choice; images with no
    same-class candidate at all are left out of the mean).

    Args:
        neighbours: k, the number of voters.
        temperature: tau of the vote weights exp(s / tau).
    """

    def __init__(self, neighbours: int = 100, temperature: float = 0.1) -> None:
        super().__init__()
        if neighbours < 1:
            raise ValueError(f"neighbours (k) must be >= 1, got {neighbours}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.neighbours = neighbours
        self.temperature = temperature

    @in_full_precision
    def forward(self, queries: torch.Tensor, query_labels: torch.Tensor, candidates: torch.Tensor,
                candidate_labels: torch.Tensor, self_index: torch.Tensor | None = None) -> torch.Tensor:
        """Mean leave-one-out kNN loss of the queries.

        Args:
            queries: (B, D) embeddings (normalised here).
            query_labels: (B,) int.
            candidates: (N, D) embeddings the neighbours are drawn from (a memory bank, the batch, or both).
            candidate_labels: (N,) int.
            self_index: (B,) position of each query among the candidates, -1 where it is not one of them.
        """
        if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
            raise ValueError(f"queries (B, D) and candidates (N, D) must share D, got {tuple(queries.shape)} and "
                             f"{tuple(candidates.shape)}")
        similarity = F.normalize(queries.float(), dim=1) @ F.normalize(candidates.float(), dim=1).T  # (B, N)
        if self_index is not None:
            leave_out = F.one_hot(self_index.clamp(min=0), candidates.shape[0]).bool() & (self_index[:, None] >= 0)
            similarity = similarity.masked_fill(leave_out, float("-inf"))
        same_class = query_labels[:, None] == candidate_labels[None, :]  # (B, N)
        available = torch.isfinite(similarity)
        count = min(self.neighbours, candidates.shape[0])
        nearest, index = similarity.topk(count, dim=1)  # (B, k)
        voter_valid = torch.isfinite(nearest)
        voter_same = same_class.gather(1, index) & voter_valid
        # The nearest same-class candidate, for queries whose k voters hold none of their class.
        same_available = same_class & available
        nearest_same = similarity.masked_fill(~same_available, float("-inf")).max(dim=1).values  # (B,)
        has_same = same_available.any(dim=1)
        add_nearest_same = has_same & ~voter_same.any(dim=1)
        logits = torch.cat([nearest, nearest_same[:, None]], dim=1) / self.temperature  # (B, k + 1)
        voters = torch.cat([voter_valid, add_nearest_same[:, None]], dim=1)
        agreeing = torch.cat([voter_same, add_nearest_same[:, None]], dim=1)
        if not has_same.any():
            return 0.0 * queries.sum()  # no candidate shares any label: nothing to learn from this batch
        # Rows without a same-class candidate are dropped before logsumexp: an all -inf row has a NaN gradient.
        logits, voters, agreeing = logits[has_same], voters[has_same], agreeing[has_same]
        minus_inf = torch.full_like(logits, float("-inf"))
        log_agreeing = torch.logsumexp(torch.where(agreeing, logits, minus_inf), dim=1)
        log_all = torch.logsumexp(torch.where(voters, logits, minus_inf), dim=1)
        return -(log_agreeing - log_all).mean()
