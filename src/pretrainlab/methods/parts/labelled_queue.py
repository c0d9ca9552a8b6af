"""A first-in-first-out memory of past embeddings with their labels (LOOK's neighbour bank)."""

from __future__ import annotations

import torch
import torch.nn as nn

from pretrainlab.distributed import gather_no_grad
from pretrainlab.methods.parts.queue import MemoryQueue


class LabelledMemoryQueue(nn.Module):
    """A `MemoryQueue` of `size` embeddings plus the label of each; unwritten slots are never returned.

    Both are buffers, so a resumed run continues with the same memory.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.embeddings = MemoryQueue(size, dim, normalize=True)
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))

    @torch.no_grad()
    def push(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """embeddings (B, dim) and labels (B,) from this rank; every rank's batch enters, oldest out first."""
        labels = gather_no_grad(labels.long())  # (W B,), in the order MemoryQueue gathers the embeddings
        size = self.labels.shape[0]
        count = min(len(labels), size)
        positions = (self.embeddings.pointer + torch.arange(count, device=self.labels.device)) % size
        self.labels[positions] = labels[-count:]
        self.embeddings.push(embeddings)

    def valid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The written entries: embeddings (n, dim) and labels (n,)."""
        items = self.embeddings.valid()
        return items, self.labels[: items.shape[0]]
