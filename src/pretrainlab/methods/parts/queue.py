"""A first-in-first-out memory of past embeddings (MoCo's dictionary, SwAV's queue)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.distributed import gather_no_grad


class MemoryQueue(nn.Module):
    """Holds `size` embeddings of `dim`; `push` replaces the oldest with the newest (gathered over ranks).

    The queue is a buffer, so it is saved in checkpoints and a resumed run continues with the same negatives.
    """

    def __init__(self, size: int, dim: int, normalize: bool = True) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got {size}, {dim}")
        initial = torch.randn(size, dim)
        self.register_buffer("items", F.normalize(initial, dim=1) if normalize else initial)  # (size, dim)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, embeddings: torch.Tensor) -> None:
        """embeddings (B, dim) from this rank; all ranks' batches enter the queue, oldest first out."""
        embeddings = gather_no_grad(embeddings.detach()).to(self.items.dtype)
        size = self.items.shape[0]
        count = min(len(embeddings), size)
        positions = (self.pointer + torch.arange(count, device=self.items.device)) % size
        self.items[positions] = embeddings[-count:]
        self.pointer.copy_((self.pointer + count) % size)
        self.filled.copy_(torch.clamp(self.filled + count, max=size))

    def full(self) -> bool:
        """Every slot has been written at least once (the initial random rows are all gone)."""
        return int(self.filled) >= self.items.shape[0]

    def valid(self) -> torch.Tensor:
        """The stored embeddings that have been written at least once: (n, dim)."""
        return self.items if int(self.filled) >= self.items.shape[0] else self.items[: int(self.filled)]
