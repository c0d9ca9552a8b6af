"""The one training loop: any Method, any source; it never knows which method it runs."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from pretrainlab.allocator import keep_freed_memory
from pretrainlab.backbones import save_backbone
from pretrainlab.backbones.model_api import drive_schedules
from pretrainlab.data.loader import MemoryFeed
from pretrainlab.data.shard_feed import ShardFeed
from pretrainlab.data.shards import ShardSplit
from pretrainlab.data.source import ImageSet
from pretrainlab.distributed import is_distributed, is_peer_failure, mean_over_ranks, rank, world_size
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods.base import Method
from pretrainlab.train.checkpoint import append_metrics, truncate_metrics
from pretrainlab.train.config import TrainConfig
from pretrainlab.train.optim import build_optimizer, learning_rate_at, set_learning_rate
from pretrainlab.train.signals import install_stop_handlers, restore_handlers
from pretrainlab.train.strategy import make_strategy
from pretrainlab.train.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)

Monitor = Callable[[nn.Module, int], dict[str, float]]
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingInterrupted(PretrainlabError):
    """Raised after a signal (or `stop_after`) once the current step is checkpointed."""


class PeerLost(TrainingInterrupted):
    """Another process of a distributed run died or stopped answering: this one stops instead of waiting forever."""


class TrainingDiverged(PretrainlabError):
    """The loss became NaN or infinite; the last checkpoint on disk predates it."""


def step_seed(seed: int, process_rank: int, step: int) -> int:
    """One seed per (run, rank, step): views, masks and dropout are reproducible after a resume."""
    return (seed * 1_000_003 + process_rank * 7_919 + step) % (2**63 - 1)


@dataclass
class Progress:
    step: int = 0
    last_loss: float = math.nan
    window_images: int = 0
    window_start: float = 0.0


class Trainer:
    """Runs `method` over `images` for `config.epochs`, writing checkpoints and metrics into `run_dir`.

    Args:
        method: the pretext task (already on `device`).
        images: the training split (labels are passed to methods that use them): decoded images, or a split of
            tar shards that loader workers stream (`shards:` data).
        monitor: optional callable(backbone, epoch) -> scalars, e.g. an online kNN accuracy (every knn_every epochs).
        filter_monitor: optional callable(backbone, epoch) -> values, the filters' health (every filters_every epochs).
    """

    def __init__(self, method: Method, images: ImageSet | ShardSplit, config: TrainConfig, run_dir: Path,
                 device: torch.device, monitor: Monitor | None = None, show_progress: bool = True,
                 filter_monitor: Monitor | None = None) -> None:
        if device.type == "cpu":
            keep_freed_memory()
        if config.channels_last:  # views are made channels-last in train_step
            method = method.to(memory_format=torch.channels_last)
        self.method = method
        self.images = images
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.monitor = monitor
        self.filter_monitor = filter_monitor if config.filters_every else None
        self.is_main = rank() == 0
        self.show_progress = show_progress and self.is_main
        if isinstance(images, ShardSplit):
            self.feed = ShardFeed(images, config.batch_size, config.seed, rank(), world_size(), config.workers,
                                  config.shuffle_buffer, config.gpu_decode)
        else:
            self.feed = MemoryFeed(images, config.batch_size, config.seed, rank(), world_size(), config.prefetch)
        self.plan = self.feed.plan
        self.steps_per_epoch = self.feed.steps_per_epoch
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_epochs = config.resolved_warmup_epochs(self.steps_per_epoch)
        self.warmup_steps = int(round(self.warmup_epochs * self.steps_per_epoch))
        self.strategy = make_strategy(config.strategy, method, config.sync_batchnorm, config.precision)
        self.model: nn.Module = self.strategy.model
        # Built after sharding: under fsdp the optimiser then holds only this rank's shards.
        self.optimizer = build_optimizer(method, config.optimizer, config.scaled_lr, config.weight_decay,
                                         config.momentum, config.lars_trust)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.generator = torch.Generator(device=device)
        self._interrupted = False
        self.last_checkpoint = 0
        self.tensorboard: TensorBoardLog | None = None

    # -- state ---------------------------------------------------------------------------------
    def restore(self) -> int:
        try:
            state = self.strategy.load(self.run_dir, self.optimizer)  # the method's and optimiser's state
            self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise PretrainlabError(f"checkpoint in {self.run_dir / 'checkpoints'} does not fit this run's method, "
                                   f"backbone or optimizer ({str(error).splitlines()[0][:120]}); restore the run "
                                   "folder from a copy") from None
        self.feed.load_state_dict(state.get("stream", {}))
        if self.is_main:
            truncate_metrics(self.run_dir, int(state["step"]))
        self.last_checkpoint = int(state["step"])
        return self.last_checkpoint

    def checkpoint(self, step: int) -> None:
        """Every rank calls it: the stream position is gathered, and sharded weights are saved by all."""
        extra = {"scaler": self.scaler.state_dict(), "step": step, "stream": self.feed.state_dict()}
        self.strategy.save(self.run_dir, self.optimizer, extra)
        self.last_checkpoint = step

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, step: int, images: torch.Tensor, labels: torch.Tensor | None,
                   extras: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One optimiser step over `accumulate` micro-batches; returns the mean of the logged scalars.

        `extras` (aligned per-image arrays of the source, e.g. pair partners) reach the method in `Batch.extra`.
        """
        config = self.config
        set_learning_rate(self.optimizer, learning_rate_at(step, self.total_steps, self.warmup_steps,
                                                           config.scaled_lr, config.min_lr))
        drive_schedules(self.method, step / self.total_steps)  # architectures' own schedules (SLAB, iLLaMA)
        seed = step_seed(config.seed, rank(), step)
        torch.manual_seed(seed)
        self.generator.manual_seed(seed)
        chunks = list(zip(images.chunk(config.accumulate),
                          labels.chunk(config.accumulate) if labels is not None else [None] * config.accumulate,
                          strict=True))
        totals: dict[str, torch.Tensor] = {}
        for index, (chunk, chunk_labels) in enumerate(chunks):
            batch = self.method.prepare_batch(chunk, chunk_labels, self.generator)
            batch.extra.update({name: value.chunk(config.accumulate)[index] for name, value in (extras or {}).items()})
            if config.channels_last:
                for views in batch.views.values():
                    for view in views:
                        view.images = view.images.contiguous(memory_format=torch.channels_last)
            last = index == len(chunks) - 1
            sync = contextlib.nullcontext() if last else self.strategy.no_sync()
            with sync, torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES.get(config.precision),
                                      enabled=config.precision != "fp32"):
                outputs = self.forward(batch)
            self.scaler.scale(outputs["loss"] / config.accumulate).backward()
            for key, value in outputs.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float() / config.accumulate
        if config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.method.parameters(), config.grad_clip)
            totals["grad_norm"] = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # fsdp: a DTensor
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.on_step_end(step, self.total_steps)
        return totals

    # -- the loop ------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        start_step = self.restore() if resume else 0
        if self.is_main and self.config.tensorboard:
            self.tensorboard = TensorBoardLog(self.run_dir, start_step)
        if start_step == 0 and self.monitor and self.config.knn_every:
            self._run_monitor(self.monitor, 0, 0)  # the untrained init: the random baseline of this very run (issue 9)
        progress = Progress(step=start_step, window_start=time.perf_counter())
        check_every = 1 if self.device.type == "cpu" else self.config.log_every
        started = time.perf_counter()
        bar = tqdm(total=self.total_steps, initial=start_step, disable=not self.show_progress, unit="step",
                   dynamic_ncols=True, desc=f"{self.method.name}")
        previous_handlers = install_stop_handlers(self._request_stop)
        self.method.train()
        if start_step == 0 and self.filter_monitor:  # the initial filters, so the log shows them forming
            self._run_monitor(self.filter_monitor, 0, 0)
        try:
            self._run(start_step, progress, check_every, bar)
        except RuntimeError as error:  # torch.distributed's errors are RuntimeErrors too
            if not (is_distributed() and is_peer_failure(error)):
                raise
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            first_line = re.sub(r"^\[[^\]]*\]\s*", "", first_line)[:160]  # gloo prefixes its source file
            raise PeerLost(
                f"lost contact with another process of the job at step {progress.step + 1} ({first_line}); the last "
                f"checkpoint (step {self.last_checkpoint}) is in {self.run_dir / 'checkpoints'}; restart every node "
                "with --resume") from None
        finally:
            bar.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
            restore_handlers(previous_handlers)
        self.checkpoint(self.total_steps)
        backbone_state = self.strategy.full_state("backbone.model.")  # fsdp: gathered from every rank
        if self.is_main:
            save_backbone(self.method.backbone, self.run_dir / "backbone.safetensors", backbone_state)
        seconds = time.perf_counter() - started
        if self.feed.skipped:
            log.warning("%d unreadable images were skipped while streaming", self.feed.skipped)
        return {"steps": self.total_steps, "seconds": seconds, "final_loss": progress.last_loss,
                "skipped_images": self.feed.skipped,
                "images_per_second": (self.total_steps - start_step) * self.config.batch_size / max(seconds, 1e-9)}

    def _run(self, start_step: int, progress: Progress, check_every: int, bar: tqdm) -> None:
        for step, images, labels, extras in self.feed.batches(start_step, self.total_steps, self.device):
            scalars = self.train_step(step, images, labels, extras)
            progress.step = step + 1
            progress.window_images += self.config.batch_size
            if progress.step % check_every == 0 or progress.step == self.total_steps:
                self._check_finite(scalars, step)
            if progress.step % self.config.log_every == 0 or progress.step == self.total_steps:
                self._log(progress, scalars, bar)
            self._epoch_end_work(progress.step)
            bar.update(1)
            if self._should_stop(progress.step):
                self.checkpoint(progress.step)
                raise TrainingInterrupted(
                    f"stopped at step {progress.step} of {self.total_steps}; checkpoint saved in "
                    f"{self.run_dir / 'checkpoints'}; continue with --resume"
                )

    def _epoch_end_work(self, step: int) -> None:
        steps_per_epoch = self.steps_per_epoch
        every = self.config.checkpoint_every or steps_per_epoch
        if step % every == 0 and step < self.total_steps:
            self.checkpoint(step)
        epoch, within_epoch = divmod(step, steps_per_epoch)
        for monitor, every in ((self.monitor, self.config.knn_every), (self.filter_monitor, self.config.filters_every)):
            if monitor and every and within_epoch == 0 and epoch % every == 0:
                self._run_monitor(monitor, step, epoch)

    def _run_monitor(self, monitor: Monitor, step: int, epoch: int) -> None:
        backbone = self.strategy.full_backbone(self.device)  # fsdp: an unsharded copy on rank 0
        if self.is_main:
            scalars = monitor(backbone, epoch)
            append_metrics(self.run_dir, {"step": step, "epoch": epoch, **scalars})
            if self.tensorboard is not None:
                self.tensorboard.scalars(scalars, step, "monitor")
            self.method.train()
        if is_distributed():
            torch.distributed.barrier()

    def _check_finite(self, scalars: dict[str, torch.Tensor], step: int) -> None:
        loss = float(scalars["loss"])
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} at step {step + 1} (epoch {step // self.steps_per_epoch}); the last good "
                f"checkpoint is in {self.run_dir / 'checkpoints'}; lower --lr, set --grad-clip or use --precision fp32"
            )

    def _log(self, progress: Progress, scalars: dict[str, torch.Tensor], bar: tqdm) -> None:
        now = time.perf_counter()
        rate = progress.window_images / max(now - progress.window_start, 1e-9)
        values = {key: float(value) for key, value in mean_over_ranks(scalars, self.device).items()}
        progress.last_loss = values["loss"]
        progress.window_images, progress.window_start = 0, now
        record = {"step": progress.step, "epoch": progress.step / self.steps_per_epoch,
                  "lr": self.optimizer.param_groups[0]["lr"], "images_per_second": rate, **values}
        if self.is_main:
            append_metrics(self.run_dir, record)
            if self.tensorboard is not None:
                self.tensorboard.scalars(record, progress.step)
        bar.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{rate:.0f}")

    def _request_stop(self) -> None:
        self._interrupted = True

    def _should_stop(self, step: int) -> bool:
        stop = self._interrupted or (self.config.stop_after and step >= self.config.stop_after)
        if is_distributed():  # every rank must stop at the same step, or collectives hang
            flag = torch.tensor([float(stop)], device=self.device)
            torch.distributed.all_reduce(flag)
            stop = bool(flag.item() > 0)
        return bool(stop) and step < self.total_steps
