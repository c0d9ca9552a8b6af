"""CLIP's symmetric InfoNCE between image and text embeddings of the same pairs.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", arXiv 2103.00020
(figure 3): logits = exp(t) * normalised image @ normalised text^T; the loss averages cross-entropy over
images (which text?) and over texts (which image?). exp(t) is a learned temperature the caller owns
(`logit_scale`, clamped at 100 as in the paper).

Under DDP, embeddings are gathered from every rank with gradients, and each rank scores its own rows
against the whole global batch (open_clip's "local loss"); the mean of the ranks' losses is then the
single-process loss of the global batch, and DDP's gradient averaging gives its gradient.

Equal captions: when `text_ids` are given, pairs whose captions are identical (e.g. prompt-template
captions of one class) are all positives of each other, with equal weight, instead of negatives.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.distributed import gather_no_grad, gather_with_grad, rank
from pretrainlab.losses.full_precision import in_full_precision

MAX_LOGIT_SCALE = 100.0


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j targets_ij log softmax(logits)_ij; targets (B, N) rows sum to 1."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class CLIPLoss(nn.Module):
    """Symmetric image-text InfoNCE over the (gathered) batch."""

    @in_full_precision
    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                text_ids: torch.Tensor | None = None) -> torch.Tensor:
        """image, text: (B, E) embeddings of B pairs; logit_scale: scalar exp(t) > 0; text_ids (B,) optional.

        Returns the scalar loss (mean of the image->text and text->image cross-entropies).
        """
        image, text = F.normalize(image, dim=1), F.normalize(text, dim=1)
        all_image, all_text = gather_with_grad(image), gather_with_grad(text)  # (W B, E)
        image_logits = logit_scale * image @ all_text.T  # (B, W B): each local image against every text
        text_logits = logit_scale * text @ all_image.T  # (B, W B)
        local = image.shape[0]
        own = torch.arange(local, device=image.device) + rank() * local  # each pair's row in the global batch
        if text_ids is None:
            return (F.cross_entropy(image_logits, own) + F.cross_entropy(text_logits, own)) / 2
        same = (text_ids[:, None] == gather_no_grad(text_ids)[None, :]).float()  # (B, W B), own pair included
        targets = same / same.sum(dim=1, keepdim=True)
        return (soft_cross_entropy(image_logits, targets) + soft_cross_entropy(text_logits, targets)) / 2
