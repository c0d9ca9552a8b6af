"""The training configuration and the fully resolved run configuration saved as config.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pretrainlab.errors import PretrainlabError

PRECISIONS = ("fp32", "bf16", "fp16")
# Settings where 0 is meaningful and a negative value is not (grad_clip a float, the rest whole numbers): what 0 and
# N mean, for the error line.
COUNTS_FROM_ZERO = {
    "checkpoint_every": "0: once per epoch, N: every N steps",
    "knn_every": "0: off, N: every N epochs",
    "filters_every": "0: off, N: every N epochs",
    "stop_after": "0: never, N: after N steps",
    "grad_clip": "0: off",
    "workers": "0: decode in the training process",
    "prefetch": "0: no read-ahead",
    "shuffle_buffer": "0 or 1: no shuffling",
    "seed": "any whole number from 0",
    "warmup_min_steps": "0: a tenth of the run, N: at least N steps",
}
NOT_FLAGS = ("prefetch", "warmup_min_steps")  # set in a recipe's train: section only


@dataclass(frozen=True)
class TrainConfig:
    """Args:
        epochs: passes over the training split.
        batch_size: images per optimiser step, over all processes.
        optimizer: sgd, adamw or lars.
        lars_trust: LARS's trust coefficient eta (0.001 as in its paper; solo-learn's CIFAR recipes use 0.02,
            since a short run at eta 0.001 moves the weights by only lr * eta of their norm per step).
        lr: base learning rate for a batch of 256; scaled linearly with batch_size when lr_scaling is "linear".
        min_lr: learning rate at the end of the cosine decay.
        warmup_epochs: linear warm-up length (fractions allowed); None (the default): a tenth of the run, at
            most 10 epochs (SimCLR's 10 of 100). A fixed 10 epochs left a 4-epoch run in warm-up throughout,
            at a tenth of its learning rate or less (issue 9).
        warmup_min_steps: the shortest default warm-up, in optimiser steps (a recipe setting; an explicit
            `warmup_epochs` overrides it). A tenth of a short run on a small dataset is a few dozen steps, and at
            SimCLR's rate a ramp that short throws the network far off before it learns (issue 9: 91.8 % kNN
            with a 37-step ramp, 95.1 % with a 93-step one, same 12-epoch run). Capped at a third of the run.
        precision: fp32, bf16 (autocast) or fp16 (autocast with a gradient scaler).
        grad_clip: clip the gradient norm to this value (0: off).
        accumulate: split each batch into this many micro-batches, one optimiser step per batch.
        checkpoint_every: steps between checkpoints (0: once per epoch); one is always written at the end.
        knn_every: run the online kNN monitor every this many epochs (0: off), and once on the untrained init
            (epoch 0), so the curve starts at this run's own random-init baseline.
        filters_every: log the 3x3 filters' health (explain/filters.py) every this many epochs, and before the
            first step (0: off).
        stop_after: stop as if interrupted after this many steps (0: never); continue with resume.
        prefetch: batches a background thread reads ahead (GPU runs).
        channels_last: keep weights and views in NHWC memory order (faster convolutions on CPUs and GPUs).
        workers: loader worker processes per training process that read and decode streamed shards (`shards:`
            data; 0 decodes in the training process). A resumed stream needs the same number.
        shuffle_buffer: samples each shard-reading worker shuffles among (shards are written in random order).
        gpu_decode: streamed JPEGs are decoded on the GPU (torchvision's nvJPEG), not in the workers.
        strategy: ddp (every process holds all weights) or fsdp (weights, gradients and optimiser state sharded
            over the processes with PyTorch's FSDP2; checkpoints sharded with torch.distributed.checkpoint).
        dist_timeout: seconds a collective may wait for the other processes before the run stops with an error
            (a process that dies closes its connections and is noticed at once; this bounds a hung one).
        tensorboard: also write TensorBoard event files into RUN/tensorboard/ (metrics.jsonl is always written).
    """

    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.06
    lr_scaling: str = "linear"
    min_lr: float = 0.0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    lars_trust: float = 0.001
    warmup_epochs: float | None = None
    warmup_min_steps: int = 0
    precision: str = "fp32"
    grad_clip: float = 0.0
    accumulate: int = 1
    checkpoint_every: int = 0
    knn_every: int = 0
    filters_every: int = 0
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True
    compile: bool = False
    sync_batchnorm: bool = False
    stop_after: int = 0
    prefetch: int = 2
    workers: int = 4
    shuffle_buffer: int = 2000
    gpu_decode: bool = False
    strategy: str = "ddp"
    dist_timeout: float = 1800.0
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.accumulate < 1:
            raise PretrainlabError("epochs, batch_size and accumulate must be >= 1")
        if self.batch_size % self.accumulate:
            raise PretrainlabError(f"batch_size {self.batch_size} must be divisible by accumulate {self.accumulate}")
        if self.precision not in PRECISIONS:
            raise PretrainlabError(f"unknown precision '{self.precision}'; valid precisions: {', '.join(PRECISIONS)}")
        if self.lr_scaling not in ("linear", "none"):
            raise PretrainlabError(f"lr_scaling must be 'linear' or 'none', got '{self.lr_scaling}'")
        if self.strategy not in ("ddp", "fsdp"):
            raise PretrainlabError(f"unknown strategy '{self.strategy}'; valid strategies: ddp, fsdp")
        if self.dist_timeout <= 0:
            raise PretrainlabError(f"dist_timeout must be > 0 seconds, got {self.dist_timeout}")
        if self.lars_trust <= 0:
            raise PretrainlabError(f"lars_trust must be > 0, got {self.lars_trust}")
        if self.lr <= 0 or self.weight_decay < 0 or (self.warmup_epochs is not None and self.warmup_epochs < 0):
            raise PretrainlabError("lr must be > 0, weight_decay and warmup_epochs >= 0")
        self.check_counts()

    def check_counts(self) -> None:
        """Intervals, counts and bounds a negative (or zero) value would silently misread: `filters_every -1`
        trained with the monitor on, `log_every 0` divided by zero at the first step."""
        for name, meaning in COUNTS_FROM_ZERO.items():
            value = getattr(self, name)
            if value < 0:
                where = f"train.{name}" if name in NOT_FLAGS else f"--{name.replace('_', '-')} (train.{name})"
                raise PretrainlabError(f"{where} must be >= 0 ({meaning}), got {value}")
        if self.log_every < 1:
            raise PretrainlabError(f"--log-every (train.log_every) must be >= 1 step, got {self.log_every}")
        if not 0 <= self.momentum < 1:
            raise PretrainlabError(f"--momentum (train.momentum) must be in [0, 1), got {self.momentum}")
        if self.min_lr < 0:
            raise PretrainlabError(f"--min-lr (train.min_lr) must be >= 0, got {self.min_lr}")

    def resolved_warmup_epochs(self, steps_per_epoch: int) -> float:
        """The warm-up actually used: `warmup_epochs`, or when None a tenth of the run (at most 10 epochs) but at
        least `warmup_min_steps` steps, and then at most a third of the run."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        tenth = min(10.0, self.epochs / 10)
        floor = self.warmup_min_steps / max(1, steps_per_epoch)
        return max(tenth, min(floor, self.epochs / 3))

    @property
    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / 256 if self.lr_scaling == "linear" else self.lr


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rerun a pre-training: saved, resolved, as `config.yaml` in the run folder."""

    method: str
    backbone: str = "resnet18_cifar"
    data: str = "builtin"
    out: str = "runs/run"
    img_size: int | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    download: bool = False
    max_train: int | None = None  # pre-train on a fixed class-balanced subset of this many training images
    # Decoding of file sources (folder:, shards:): rows of the decode box (default: img_size, else 64) and its
    # width / height (1: centre square). A box larger than img_size, or wider, leaves random-resized crops more
    # of each photo to choose from.
    decode_size: int | None = None
    decode_aspect: float = 1.0
    backbone_options: dict[str, Any] = field(default_factory=dict)  # timm kwargs of the backbone (saved with it)
