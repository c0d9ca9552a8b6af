"""Shared pieces of the benchmarks: real CIFAR-10 images when available, and median timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pretrainlab.allocator import keep_freed_memory

# pretrainlab's Trainer and CLI set this process-wide allocator option; the benchmarks set it up front so
# both sides of every side-by-side comparison run under it (it speeds lightly's side up too).
keep_freed_memory()

SIMCLR_HIDDEN, SIMCLR_OUT, SIMCLR_TEMPERATURE = 512, 128, 0.5
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def shared_data(name: str) -> Path:
    """`name` in ../shared/data beside the checkout (/work/main), or two levels up for a worktree (/work/wt/NAME);
    the checkout's sibling when neither exists, so a missing-file message names the usual place."""
    checkout = Path(__file__).resolve().parents[1]
    candidates = [folder / "shared" / "data" / name for folder in (checkout.parent, checkout.parent.parent)]
    return next((path for path in candidates if path.exists()), candidates[0])


CIFAR = shared_data("cifar10_jpeg.npz")


def replace_block(text: str, tag: str, body: str) -> str:
    """`text` with what lies between `<!-- tag -->` and `<!-- /tag -->` replaced by `body` (on lines of its own):
    how every study writes its table into its docs page."""
    start, end = f"<!-- {tag} -->", f"<!-- /{tag} -->"
    return text[: text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end):]


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


def print_step_medians(medians: dict[str, float], batch: int) -> None:
    """One line per candidate: median milliseconds per step and images per second."""
    for name, seconds in medians.items():
        print(f"{name:12s}: {seconds * 1000:.1f} ms per step, {batch / seconds:.0f} images/s")


def simclr_train_step(backbone_name: str, images: torch.Tensor, run_dir: Path, precision: str = "fp32",
                      compile_model: bool = False) -> Callable[[], None]:
    """pretrainlab's SimCLR step on `images` ((B, 32, 32, 3) uint8 on the training device) through the Trainer.

    The settings every step benchmark shares: lightly's SimCLRProjectionHead sizes (512 hidden, 128 out),
    temperature 0.5, SimCLR's views without blur, SGD at lr 0.06.
    """
    from pretrainlab.backbones import create_backbone
    from pretrainlab.data.source import ImageSet
    from pretrainlab.methods import MethodContext
    from pretrainlab.methods.base import ViewOptions
    from pretrainlab.methods.simclr import SimCLR, SimCLRConfig
    from pretrainlab.train.config import TrainConfig
    from pretrainlab.train.loop import Trainer

    torch.manual_seed(0)
    backbone = create_backbone(backbone_name, 32, 3)
    views = ViewOptions(crop_min_scale=0.08, jitter_strength=1.0, grayscale_p=0.2, blur_p=0.0)
    config = SimCLRConfig(temperature=SIMCLR_TEMPERATURE, projection_dim=SIMCLR_OUT, hidden_dim=SIMCLR_HIDDEN,
                          views=views)
    method = SimCLR(backbone, config, MethodContext(32, 3, IMAGENET_MEAN, IMAGENET_STD)).to(images.device)
    train = TrainConfig(epochs=1, batch_size=len(images), lr=0.06, lr_scaling="none", warmup_epochs=0,
                        precision=precision, compile=compile_model)
    trainer = Trainer(method, ImageSet(images.cpu().numpy()), train, run_dir, images.device, show_progress=False)
    state = {"step": 0}

    def step() -> None:
        trainer.train_step(state["step"], images, None)
        state["step"] += 1

    return step
