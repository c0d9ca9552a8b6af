"""Tiny sources and targets for the explain tests: a few builtin digits, composed canvases, tiny CNN and ViT."""

from __future__ import annotations

import numpy as np
import torch

from pretrainlab.data.composed import compose_source
from pretrainlab.data.source import ImageSource
from pretrainlab.eval.target import EvalTarget, load_target
from pretrainlab.explain import ExplainContext, ExplainSettings
from tests.protocol_data import small_source


def digits(builtin: ImageSource, train_per_class: int = 20, test_per_class: int = 2) -> ImageSource:
    return small_source(builtin, train_per_class, test_per_class)


def canvases(builtin: ImageSource, count: int = 200, objects_per_class: int = 30) -> ImageSource:
    return compose_source(small_source(builtin, objects_per_class, 5), count)


def tiny_target(name: str, size: int = 28) -> EvalTarget:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name == "vit":
            return load_target("timm:vit_nano_patch4", size, 1)
        return load_target("timm:tinycnn", size, 1)


def make_context(target: EvalTarget, source: ImageSource, out_dir, images: int = 2, **options: object
                 ) -> ExplainContext:
    settings = ExplainSettings(images=images, probe_images=100, batch_size=16, options=dict(options),
                               show_progress=False)
    return ExplainContext(target, source, torch.device("cpu"), out_dir, settings)


def random_images(count: int, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 1, size, size, generator=torch.Generator().manual_seed(seed))


def assert_maps(maps: np.ndarray, count: int, size: int) -> None:
    assert maps.shape == (count, size, size)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6
