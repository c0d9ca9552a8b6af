"""Training batches streamed from shards: loader workers, the stream position, and the hand-over to the device.

The feed is what the Trainer iterates; the workers' side is in data/stream.py. Its state (every role's
position, gathered from all ranks) goes into each checkpoint, so `--resume` continues the stream exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from pretrainlab.data.shards import ShardSplit
from pretrainlab.data.stream import ShardStream, StreamPlan
from pretrainlab.distributed import is_distributed
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

Batch = tuple[int, torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]


class ShardFeed:
    """Global batches of `batch_size` streamed from `split`; each rank gets batch_size / world_size images a step.

    A nominal epoch is len(split) // batch_size steps (learning-rate schedule, checkpoints, logging); the stream
    itself runs on across epochs without a break.
    """

    def __init__(self, split: ShardSplit, batch_size: int, seed: int, rank: int, world_size: int, workers: int,
                 shuffle_buffer: int, gpu_decode: bool = False) -> None:
        if batch_size % world_size:
            raise PretrainlabError(f"batch size {batch_size} must be divisible by the {world_size} processes")
        if workers < 0 or shuffle_buffer < 0:
            raise PretrainlabError(f"--workers and --shuffle-buffer must be >= 0, got {workers} and {shuffle_buffer}")
        self.split = split
        self.plan = StreamPlan(tuple(split.shards), split.mode, split.size, split.aspect, split.labelled,
                               batch_size // world_size, seed, rank, world_size, workers, shuffle_buffer, gpu_decode)
        if len(split.shards) < self.plan.roles:
            raise PretrainlabError(
                f"{len(split.shards)} shards cannot feed {world_size} process(es) x {self.plan.roles_per_rank} "
                f"loader worker(s): every worker reads whole shards; write more, smaller shards (--shard-size) or "
                f"use fewer --workers")
        self.steps_per_epoch = len(split) // batch_size
        if self.steps_per_epoch < 1:
            raise PretrainlabError(f"batch size {batch_size} is larger than the shard set ({len(split)} images); "
                                   f"use --batch-size <= {len(split)}")
        self.num_images = len(split)
        self.gpu_decode = gpu_decode
        self.positions: list[tuple[int, int]] = [(0, 0)] * self.plan.roles_per_rank
        self.skipped = 0

    # -- state ---------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        plan = self.plan
        return {"shards": self.split.fingerprint(), "seed": plan.seed, "world_size": plan.world_size,
                "workers": plan.roles_per_rank, "local_batch": plan.local_batch, "shuffle_buffer": plan.shuffle_buffer}

    def state_dict(self) -> dict[str, Any]:
        """Every rank's role positions (a collective under DDP: call it on all ranks)."""
        local = [list(position) for position in self.positions]
        gathered = [local]
        skipped = [self.skipped]
        if is_distributed():
            gathered, skipped = [None] * dist.get_world_size(), [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
            dist.all_gather_object(skipped, self.skipped)
        return {**self._identity(), "positions": gathered, "skipped": skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = {key: state.get(key) for key in self._identity()}
        if saved != self._identity():
            changed = [f"{k}: saved {saved[k]}, now {v}" for k, v in self._identity().items() if saved[k] != v]
            raise PretrainlabError(f"--resume: the stream position was saved for another shard stream "
                                   f"({'; '.join(changed)}); resume with the same shards, processes and --workers")
        self.positions = [tuple(position) for position in state["positions"][self.plan.rank]]
        self.skipped = int(state["skipped"][self.plan.rank])

    # -- batches -------------------------------------------------------------------------------
    def batches(self, start_step: int, total_steps: int, device: torch.device) -> Iterator[Batch]:
        """Yields (step, uint8 images (B, H, W, C), labels (B,) or None, {}) on `device` from `start_step`."""
        plan = self.plan
        rotation = start_step % plan.roles_per_rank
        loader = torch.utils.data.DataLoader(
            ShardStream(plan, list(self.positions), rotation), batch_size=None, num_workers=plan.workers,
            pin_memory=device.type == "cuda", prefetch_factor=4 if plan.workers else None)
        stream = iter(loader)
        for step in range(start_step, total_steps):
            item = next(stream)
            if "error" in item:
                raise PretrainlabError(f"shards of {self.split.shards[0].path} and others: {item['error']}")
            expected = step % plan.roles_per_rank
            if item["role"] != expected:
                raise RuntimeError(f"stream order broken: step {step} got role {item['role']}, expected {expected}")
            images, skipped = self._images(item, device)
            labels = item["labels"]
            if labels is not None:
                labels = labels.to(device, non_blocking=True)
            self.positions[item["role"]] = tuple(int(v) for v in item["position"])
            self.skipped += int(item["skipped"]) + skipped
            if item["skipped"]:
                log.warning("step %d: %d unreadable shard members skipped (%d so far)", step, item["skipped"],
                            self.skipped)
            yield step, images, labels, {}

    def _images(self, item: dict, device: torch.device) -> tuple[torch.Tensor, int]:
        if "images" in item:
            return item["images"].to(device, non_blocking=True), 0
        from pretrainlab.data.device_decode import decode_batch

        return decode_batch(item["payloads"], self.plan.size, self.plan.aspect, self.plan.mode, device)

