"""Backbone speed, measured the way timm's `benchmark.py` measures it.

Warm-up iterations first (cuDNN autotuning, allocator growth, torch.compile tracing), then a timed loop
bracketed by device synchronisation, so queued GPU kernels are counted. Reported for inference and for a
training step (forward, backward of a dummy loss on the pooled features, optimiser step), at the
backbone's own image size, with the parameter count and the multiply-accumulates per image
(torch.utils.flop_counter counts FLOPs of matrix products and convolutions; MACs = FLOPs / 2).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, applies_when, needs_nothing, takes_options
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedSettings:
    """Args:
        batch_size: images per timed batch.
        warmup: untimed iterations before the timed ones.
        iterations: timed iterations.
        amp: bf16 autocast.
        channels_last: NHWC memory format for model and input.
        compile: torch.compile the backbone.
    """

    batch_size: int
    warmup: int
    iterations: int
    amp: bool
    channels_last: bool
    compile: bool


def speed_settings(options: dict[str, Any], device: torch.device) -> SpeedSettings:
    """Defaults follow the device: on a GPU, timm's 10 + 40 iterations of 256 images with bf16, channels_last
    and compile where supported; on a CPU, shorter loops and no compile (minutes of compiling for seconds of use).
    Options `speed_batch_size`, `speed_warmup`, `speed_iterations`, `speed_amp`, `speed_channels_last`,
    `speed_compile` override them."""
    cuda = device.type == "cuda"
    defaults = {"batch_size": 256 if cuda else 32, "warmup": 10 if cuda else 3, "iterations": 40 if cuda else 10,
                "amp": cuda and torch.cuda.is_bf16_supported(), "channels_last": cuda, "compile": cuda}
    values = {key: options.get(f"speed_{key}", default) for key, default in defaults.items()}
    return SpeedSettings(int(values["batch_size"]), int(values["warmup"]), int(values["iterations"]),
                         bool(values["amp"]), bool(values["channels_last"]), bool(values["compile"]))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def count_macs(target: EvalTarget) -> int:
    """Multiply-accumulates of one image through `pooled`, on the CPU in fp32."""
    backbone = copy.deepcopy(target.backbone).cpu().eval()
    image = torch.zeros(1, target.in_chans, target.img_size, target.img_size)  # (1, C, H, W)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        backbone.pooled(image)
    return counter.get_total_flops() // 2


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_iteration(step: Callable[[], None], settings: SpeedSettings, device: torch.device) -> float:
    for _ in range(settings.warmup):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(settings.iterations):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / settings.iterations


def timed_steps(target: EvalTarget, settings: SpeedSettings, device: torch.device) -> dict[str, float]:
    """Seconds per batch for inference and for a training step, on a private copy of the backbone."""
    backbone = copy.deepcopy(target.backbone).to(device)  # the evaluated weights stay untouched
    images = torch.randn(settings.batch_size, target.in_chans, target.img_size, target.img_size, device=device)
    if settings.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)  # (B, C, H, W) stored as NHWC
    model = torch.compile(backbone) if settings.compile else backbone
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if settings.amp else contextlib.nullcontext()
    optimizer = torch.optim.SGD(backbone.parameters(), lr=1e-6)

    def infer() -> None:
        with torch.no_grad(), autocast:
            model(images)

    def train() -> None:
        with autocast:
            features = model(images)  # (B, D)
        loss = features.float().pow(2).mean()  # a dummy loss: the cost is the backward pass, not the objective
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    backbone.eval()
    infer_seconds = seconds_per_iteration(infer, settings, device)
    backbone.train()
    train_seconds = seconds_per_iteration(train, settings, device)
    return {"infer": infer_seconds, "train": train_seconds}


@PROTOCOLS.register("speed")
@takes_options(*(f"speed_{name}" for name in SpeedSettings.__annotations__))
@applies_when(needs_nothing)
def speed_protocol(context: EvalContext) -> list[EvalResult]:
    """Images/s and ms per batch (inference and training step), parameters and GMACs per image."""
    started = time.perf_counter()
    target, device = context.target, context.device
    settings = speed_settings(context.options, device)
    notes: dict[str, str] = {}
    try:
        seconds = timed_steps(target, settings, device)
    except Exception as error:  # noqa: BLE001 - a compiler toolchain missing on this machine is not a backbone fault
        if not settings.compile:
            raise
        notes["compile_error"] = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning("torch.compile failed (%s); timing without it", notes["compile_error"])
        settings = replace(settings, compile=False)
        seconds = timed_steps(target, settings, device)
    parameters, macs = count_parameters(target.backbone), count_macs(target)
    elapsed = time.perf_counter() - started
    record_settings = {**asdict(settings), "img_size": target.img_size, "in_chans": target.in_chans,
                       "device": str(device), "device_name": device_name(device), "seed": context.options.get("seed"),
                       "macs_counted_by": "torch.utils.flop_counter (FLOPs / 2), one image", **notes}

    def result(metric: str, value: float, higher_is_better: bool = True) -> EvalResult:
        return EvalResult("speed", context.source.spec, metric, value, elapsed, settings=record_settings,
                          backbone=target.label, higher_is_better=higher_is_better)

    batch = settings.batch_size
    return [result("infer_images_per_s", batch / seconds["infer"]),
            result("infer_ms_per_batch", seconds["infer"] * 1000, higher_is_better=False),
            result("train_images_per_s", batch / seconds["train"]),
            result("train_ms_per_batch", seconds["train"] * 1000, higher_is_better=False),
            result("params", float(parameters), higher_is_better=False),
            result("gmacs", macs / 1e9, higher_is_better=False)]


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
