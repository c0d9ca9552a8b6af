"""Selfie's patch-selection loss: each masked location picks its own patch among the image's masked patches.

Trinh, Luong, Le, "Selfie: Self-supervised Pretraining for Image Embedding", arXiv 1906.02940: a contrastive
predictive coding loss (Oord et al., arXiv 1807.03748) whose distractors are the other masked patches of the
same image, scored by a dot product with the query of each masked location.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrainlab.losses.full_precision import in_full_precision


def patch_selection_logits(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """queries (B, M, D) for M masked locations, candidates (B, M, D) their patch vectors -> (B, M, M).

    [b, i, j] scores patch j as the filling of location i; the right answer is j = i.
    """
    return queries @ candidates.transpose(1, 2)


@in_full_precision
def patch_selection_loss(queries: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of picking patch i for location i among the M masked patches of the image.

    Args:
        queries: (B, M, D) pooled context plus the location's position embedding.
        candidates: (B, M, D) patch vectors of the masked patches, in the same location order.

    Returns:
        (loss, accuracy): scalars; chance accuracy is 1 / M.
    """
    logits = patch_selection_logits(queries, candidates)  # (B, M, M)
    batch, locations = logits.shape[:2]
    targets = torch.arange(locations, device=logits.device).repeat(batch)  # (B * M,)
    flat = logits.reshape(batch * locations, locations)
    accuracy = (flat.argmax(dim=1) == targets).float().mean()
    return F.cross_entropy(flat.float(), targets), accuracy.detach()
