"""Shared pieces of the benchmarks: real CIFAR-10 images when available, and median timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pretrainlab.allocator import keep_freed_memory

# pretrainlab's Trainer and CLI set this process-wide allocator option; the benchmarks set it up front so
# both sides of every side-by-side comparison run under it (it speeds lightly's side up too).
keep_freed_memory()

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpeg.npz"


def cifar_images(count: int) -> tuple[np.ndarray, str]:
    """`count` uint8 images (N, 32, 32, 3): CIFAR-10 (JPEG q75) when the offline copy exists, else noise."""
    if CIFAR.exists():
        from pretrainlab.data import load_source

        source = load_source(f"npz:{CIFAR}")
        return np.ascontiguousarray(source.train.images[:count]), "CIFAR-10 (JPEG q75) training images"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), "uniform noise (CIFAR-10 copy not found)"


def median_seconds(function: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, list[float]]:
    """Median wall time of `function` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def interleaved_medians(functions: dict[str, Callable[[], object]], rounds: int,
                        warmup: int = 2) -> dict[str, float]:
    """Times the candidates alternately, round after round, so machine noise hits them alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}
