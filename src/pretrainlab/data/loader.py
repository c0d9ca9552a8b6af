"""Which images each training step sees, and handing them to the device as uint8.

The order is a pure function of (seed, epoch), so an interrupted run that resumes at step s sees
exactly the batches an uninterrupted run would have seen. Under DDP each rank takes its own slice of
every global batch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Queue

import numpy as np
import torch

from pretrainlab.data.source import ImageSet
from pretrainlab.errors import PretrainlabError


class BatchPlan:
    """Global batches of `batch_size` images, a fresh permutation every epoch, the last partial batch dropped."""

    def __init__(self, num_images: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size > num_images:
            raise PretrainlabError(
                f"batch size {batch_size} is larger than the dataset ({num_images} images); use --batch-size <= "
                f"{num_images}"
            )
        if batch_size % world_size:
            raise PretrainlabError(f"batch size {batch_size} must be divisible by the {world_size} processes")
        self.num_images = num_images
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.steps_per_epoch = num_images // batch_size
        self._epoch = -1
        self._permutation = np.empty(0, dtype=np.int64)

    def indices(self, step: int) -> np.ndarray:
        """Image indices of this rank's share of global step `step`, sorted for memory-map locality."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_images)
            self._epoch = epoch
        batch = self._permutation[position * self.batch_size : (position + 1) * self.batch_size]
        local = self.batch_size // self.world_size
        return np.sort(batch[self.rank * local : (self.rank + 1) * local])


def fetch(images: ImageSet, indices: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (B, H, W, C) and labels (B,) on `device`; pinned host memory speeds the copy to a GPU."""
    batch = torch.from_numpy(np.ascontiguousarray(images.images[indices]))
    labels = None if images.labels is None else torch.from_numpy(images.labels[indices])
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
        labels = None if labels is None else labels.pin_memory().to(device, non_blocking=True)
    return batch, labels


def fetch_extras(images: ImageSet, indices: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's entries of every aligned extra array (e.g. pair partners), on `device`."""
    extras = {}
    for name, array in images.extras.items():
        values = torch.from_numpy(np.ascontiguousarray(array[indices]))
        extras[name] = values.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else values
    return extras


def fetch_all(images: ImageSet, indices: np.ndarray,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    return (*fetch(images, indices, device), fetch_extras(images, indices, device))


def batches(images: ImageSet, plan: BatchPlan, start_step: int, total_steps: int, device: torch.device,
            prefetch: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]]:
    """Yields (step, uint8 images, labels, extras) from `start_step`; with `prefetch` > 0 a thread reads ahead.

    `extras` holds the batch's rows of `images.extras` (empty for ordinary sources).
    """
    if prefetch <= 0:
        for step in range(start_step, total_steps):
            yield (step, *fetch_all(images, plan.indices(step), device))
        return
    queue: Queue = Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce() -> None:
        for step in range(start_step, total_steps):
            if stop.is_set():
                return
            queue.put((step, *fetch_all(images, plan.indices(step), device)))
        queue.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not None:
            yield item
    finally:
        stop.set()


class MemoryFeed:
    """The Trainer's view of an in-memory (or memory-mapped) split: a `BatchPlan` over its images.

    Shares its interface with `ShardFeed` (data/shard_feed.py): steps_per_epoch, batches(), state_dict().
    """

    def __init__(self, images: ImageSet, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 prefetch: int = 0) -> None:
        self.images = images
        self.plan = BatchPlan(len(images), batch_size, seed, rank, world_size)
        self.steps_per_epoch = self.plan.steps_per_epoch
        self.num_images = len(images)
        self.prefetch = prefetch
        self.skipped = 0

    def batches(self, start_step: int, total_steps: int, device: torch.device
                ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]]:
        return batches(self.images, self.plan, start_step, total_steps, device,
                       self.prefetch if device.type == "cuda" else 0)

    def state_dict(self) -> dict:
        return {}  # the order is a pure function of (seed, step)

    def load_state_dict(self, state: dict) -> None:
        pass
