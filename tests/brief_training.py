"""A briefly trained backbone for tests that need one better than random: a few supervised Adam steps, seed 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def train_supervised(backbone: nn.Module, source, steps: int = 100, batch: int = 32) -> nn.Module:  # noqa: ANN001
    """`steps` Adam steps of `batch` labelled 28 px digits (fixed normalisation), seed 0; returns it in eval mode."""
    torch.manual_seed(0)
    head = nn.Linear(backbone.embed_dim, 10)
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=3e-3)
    images = torch.from_numpy(source.train.images).permute(0, 3, 1, 2).float() / 255
    labels = torch.from_numpy(source.train.labels)
    generator = torch.Generator().manual_seed(0)
    backbone.train()
    for _ in range(steps):
        chosen = torch.randint(0, len(images), (batch,), generator=generator)
        loss = F.cross_entropy(head(backbone.pooled((images[chosen] - 0.13) / 0.3)), labels[chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return backbone.eval()
