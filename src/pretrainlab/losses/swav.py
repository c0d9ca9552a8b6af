"""SwAV's swapped prediction between views, with codes from the Sinkhorn-Knopp equal-partition algorithm.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", arXiv 2006.09882.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.distributed import gather_no_grad, world_size
from pretrainlab.losses.full_precision import in_full_precision


def _global_logsumexp(local: torch.Tensor, shared: torch.Tensor, dim: int) -> torch.Tensor:
    """log of the sum of exp over `dim` of this rank's `local` entries on every rank, plus the `shared` ones once."""
    per_rank = local.logsumexp(dim=dim, keepdim=True)
    if world_size() > 1:
        per_rank = gather_no_grad(per_rank.unsqueeze(0)).logsumexp(dim=0)  # (W, ...) -> over ranks
    return torch.logaddexp(per_rank, shared.logsumexp(dim=dim, keepdim=True))


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3,
                   shared_scores: torch.Tensor | None = None) -> torch.Tensor:
    """Soft codes Q that split the images equally between the K prototypes (the paper's equation 3).

    Q = diag(u) exp(C^T Z / epsilon) diag(v) is rescaled alternately so that every prototype receives
    1/K of the mass (rows) and every image 1/N (columns); the codes are returned per image, summing to 1.
    The rescaling runs on log Q, which is the same algorithm but cannot overflow or underflow to 0/0 when
    scores / epsilon is large. Under DDP the sums run over the global batch of every rank.

    Args:
        scores: (B, K) image-prototype similarities of this rank's images.
        epsilon: entropy regularisation (0.05 in the paper); smaller gives sharper codes.
        iterations: Sinkhorn iterations (3 in the paper).
        shared_scores: (M, K) scores of extra images held identically by every rank (a gathered queue):
            they take part in the equal partition once, and their codes are not returned.

    Returns:
        (B, K) codes, each row a distribution over prototypes.
    """
    log_codes = scores.float().T / epsilon  # (K, B)
    log_shared = (shared_scores.float().T / epsilon if shared_scores is not None
                  else log_codes.new_zeros(log_codes.shape[0], 0))  # (K, M)
    prototypes = log_codes.shape[0]
    images = log_codes.shape[1] * world_size() + log_shared.shape[1]
    log_total = _global_logsumexp(log_codes.flatten()[None], log_shared.flatten()[None], dim=1)
    log_codes, log_shared = log_codes - log_total, log_shared - log_total
    for _ in range(iterations):
        log_per_prototype = _global_logsumexp(log_codes, log_shared, dim=1) + math.log(prototypes)  # (K, 1)
        log_codes, log_shared = log_codes - log_per_prototype, log_shared - log_per_prototype
        log_codes = log_codes - log_codes.logsumexp(dim=0, keepdim=True) - math.log(images)
        log_shared = log_shared - log_shared.logsumexp(dim=0, keepdim=True) - math.log(images)
    return torch.exp(log_codes + math.log(images)).T  # (B, K), rows sum to 1


class SwAVLoss(nn.Module):
    """Predict the code of each global view from every other view: -sum_k q_s^(k) log p_t^(k), averaged.

    Args:
        temperature: softmax temperature of the predictions p = softmax(scores / temperature) (0.1 in the paper).
        epsilon: Sinkhorn entropy regularisation (0.05).
        sinkhorn_iterations: 3 in the paper.
    """

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iterations: int = 3) -> None:
        super().__init__()
        if temperature <= 0 or epsilon <= 0:
            raise ValueError(f"temperature and epsilon must be > 0, got {temperature} and {epsilon}")
        if sinkhorn_iterations < 1:
            raise ValueError(f"sinkhorn_iterations must be >= 1, got {sinkhorn_iterations}")
        self.temperature = temperature
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations

    @in_full_precision
    def forward(self, global_scores: list[torch.Tensor], local_scores: list[torch.Tensor],
                queue_scores: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Swapped prediction over all views.

        Args:
            global_scores: one (B, K) score matrix per global view; codes are computed from these.
            local_scores: one (B, K) score matrix per local (multi-crop) view; these only predict.
            queue_scores: per global view, (M, K) scores of its queued embeddings, or None.
        """
        if len(global_scores) < 1 or len(global_scores) + len(local_scores) < 2:
            raise ValueError("SwAV needs at least one global view and two views in all")
        queue_scores = queue_scores or [None] * len(global_scores)
        views = [*global_scores, *local_scores]
        log_predictions = [F.log_softmax(view.float() / self.temperature, dim=1) for view in views]  # (B, K) each
        total = global_scores[0].new_zeros((), dtype=torch.float32)
        for index, scores in enumerate(global_scores):
            codes = sinkhorn_knopp(scores.detach(), self.epsilon, self.sinkhorn_iterations,
                                   None if queue_scores[index] is None else queue_scores[index].detach())
            for other, log_prediction in enumerate(log_predictions):
                if other != index:
                    total = total - (codes * log_prediction).sum(dim=1).mean()
        return total / (len(global_scores) * (len(views) - 1))
