"""Average precision of rankings, the number behind retrieval mAP and multi-label mAP.

AP of one ranking = sum over its relevant items of the precision at their rank / number of relevant
items. Tied scores are ranked together, as scikit-learn's `average_precision_score` does (every member
of a tied group gets the precision at the group's last rank), so the value does not depend on an
arbitrary order among ties.
"""

from __future__ import annotations

import torch


def average_precisions(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """AP (M,) of each row of scores (M, N) with relevance (M, N) bool; NaN for a row with nothing relevant.

    Ties: every member of a group of equal similarities gets the precision at the group's last rank.
    """
    order = scores.argsort(dim=1, descending=True)
    ranked_scores = scores.gather(1, order)  # (M, N)
    ranked_relevant = relevant.gather(1, order).double()  # (M, N)
    ranks = torch.arange(1, scores.shape[1] + 1, dtype=torch.float64)  # (N,)
    hits = ranked_relevant.cumsum(dim=1)  # relevant items up to each rank
    group_end = torch.ones_like(ranked_relevant, dtype=torch.bool)
    group_end[:, :-1] = ranked_scores[:, 1:] != ranked_scores[:, :-1]
    # The last rank of the tie group of every position: positions that end a group keep their own index,
    # the others take the nearest group end to their right (reverse cumulative minimum).
    positions = torch.arange(scores.shape[1]).expand_as(order)
    end_index = torch.where(group_end, positions, scores.shape[1] - 1)
    end_index = end_index.flip(1).cummin(dim=1).values.flip(1)
    precision_at_end = hits.gather(1, end_index) / ranks[end_index]  # (M, N)
    relevant_count = ranked_relevant.sum(dim=1)
    precision_sum = (precision_at_end * ranked_relevant).sum(dim=1)
    return torch.where(relevant_count > 0, precision_sum / relevant_count.clamp(min=1), float("nan"))
