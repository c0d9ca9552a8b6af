"""Negative cosine similarity with a stop-gradient on the target (BYOL's and SimSiam's loss).

Grill et al., "Bootstrap Your Own Latent", arXiv 2006.07733 (2 - 2 cos is the normalised MSE);
Chen, He, "Exploring Simple Siamese Representation Learning", arXiv 2011.10566 (D(p, stopgrad(z))).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.losses.full_precision import in_full_precision


class NegativeCosineSimilarity(nn.Module):
    """-cos(prediction, stopgrad(target)), averaged over the batch: in [-1, 1], -1 when aligned.

    BYOL's ||normalize(p) - normalize(z)||^2 equals 2 + 2 * this value.
    """

    @in_full_precision
    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """prediction, target: (B, D) -> scalar; no gradient flows into `target`."""
        return -F.cosine_similarity(prediction, target.detach(), dim=1).mean()
