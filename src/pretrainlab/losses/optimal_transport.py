"""Optimal-transport distance between two sets of embeddings by IPOT, for UNITER's word-region alignment.

Xie et al., "A Fast Proximal Point Method for Computing Exact Wasserstein Distance", arXiv 1802.04307
(IPOT), as used by Chen et al., "UNITER: UNiversal Image-TExt Representation Learning", arXiv 1909.11740,
section 3.2 (WRA): the transport plan T between the words and the image regions of a pair minimises
<C, T> under uniform marginals; IPOT reaches the exact (unregularised) optimum by proximal steps, each a
Sinkhorn projection of exp(-C / beta) * T_previous. The plan is found without gradients and the distance
<C, T> is differentiated through the cost only (the envelope theorem: at the optimum dT does not change it).

Padding: each pair has its own number of words and regions; masked positions get no mass, so a padded
pair gives the same distance as the unpadded one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrainlab.errors import PretrainlabError


@torch.no_grad()
def ipot_plan(cost: torch.Tensor, rows_valid: torch.Tensor, columns_valid: torch.Tensor, beta: float = 0.5,
              iterations: int = 50, inner_steps: int = 1) -> torch.Tensor:
    """The IPOT transport plan with uniform marginals.

    Args:
        cost: (B, N, M) transport cost between row items (words) and column items (regions).
        rows_valid: (B, N) bool, True at real rows; columns_valid: (B, M) bool, True at real columns.
        beta: proximal step size (UNITER uses 0.5); smaller is closer to each step's exact projection.
        iterations: proximal steps (50 in UNITER); inner_steps: Sinkhorn steps per proximal step (1 in IPOT).
    Returns:
        plan (B, N, M): rows sum to 1/n, columns to 1/m (n, m the pair's real counts), zero on padding.
    """
    if beta <= 0 or iterations < 1 or inner_steps < 1:
        raise PretrainlabError(f"IPOT needs beta > 0, iterations >= 1, inner_steps >= 1; got {beta}, {iterations}, "
                               f"{inner_steps}")
    joint = (rows_valid[:, :, None] & columns_valid[:, None, :]).to(cost.dtype)  # (B, N, M)
    rows = rows_valid.sum(dim=1, keepdim=True).clamp(min=1).to(cost.dtype)  # (B, 1)
    columns = columns_valid.sum(dim=1, keepdim=True).clamp(min=1).to(cost.dtype)  # (B, 1)
    kernel = torch.exp(-cost / beta) * joint  # (B, N, M)
    plan = joint.clone()
    sigma = columns_valid.to(cost.dtype) / columns  # (B, M)
    for _ in range(iterations):
        q = kernel * plan  # (B, N, M)
        for _ in range(inner_steps):
            # delta (B, N) and sigma (B, M) scale q so its rows sum to 1/n and its columns to 1/m.
            delta = rows_valid.to(cost.dtype) / (rows * torch.bmm(q, sigma[:, :, None]).squeeze(2)).clamp(min=1e-30)
            sigma = columns_valid.to(cost.dtype) / (columns * torch.bmm(q.transpose(1, 2), delta[:, :, None])
                                                    .squeeze(2)).clamp(min=1e-30)
        plan = delta[:, :, None] * q * sigma[:, None, :]
    return plan


def ot_distance(cost: torch.Tensor, rows_valid: torch.Tensor, columns_valid: torch.Tensor, beta: float = 0.5,
                iterations: int = 50) -> torch.Tensor:
    """cost (B, N, M), masks (B, N) and (B, M) -> OT distance per pair (B,), differentiable through `cost`."""
    plan = ipot_plan(cost.detach().float(), rows_valid, columns_valid, beta, iterations)
    return (cost * plan.to(cost.dtype)).sum(dim=(1, 2))


def cosine_cost(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """rows (B, N, D), columns (B, M, D) -> 1 - cosine similarity (B, N, M), in [0, 2] (UNITER's WRA cost)."""
    return 1 - F.normalize(rows, dim=-1) @ F.normalize(columns, dim=-1).transpose(1, 2)


def word_region_alignment_loss(distance: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
    """UNITER's WRA loss: OT distances (B,) of matched pairs are minimised and of mismatched ones maximised.

    matched (B,) bool. The mean over all pairs of (+distance if matched else -distance); the cosine cost is
    bounded, so pushing mismatched pairs apart cannot diverge.
    """
    sign = matched.to(distance.dtype) * 2 - 1  # (B,) +1 / -1
    return (sign * distance).mean()
