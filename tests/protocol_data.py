"""Small real and exact synthetic data for the training protocols' tests (fine-tune, few labels, noise, ...)."""

from __future__ import annotations

import numpy as np
import torch

from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.eval import EvalContext, load_target


def per_class(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of the first `count` images of every class, in an order drawn by `seed`."""
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(labels == cls))[:count] for cls in np.unique(labels)]
    return np.sort(np.concatenate(parts))


def small_source(source: ImageSource, train_per_class: int, test_per_class: int) -> ImageSource:
    """A class-balanced slice of a labelled source (the builtin digits), to keep training tests fast."""
    train = source.train.subset(per_class(source.train.labels, train_per_class))
    test = source.test.subset(per_class(source.test.labels, test_per_class))
    return ImageSource(f"{source.spec}[small]", train, test, classes=source.classes, split_note=source.split_note)


def gaussian_clusters(num_classes: int, per_class: int, dim: int, spread: float, seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, dim) drawn around one random centre per class, and their labels (N,)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * 3
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=generator)
    return features, labels


def context_with_features(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                          options: dict | None = None) -> EvalContext:
    """An EvalContext whose frozen features are given (exact synthetic data); its images are placeholders."""
    images = {name: np.zeros((len(labels), 8, 8, 1), dtype=np.uint8) for name, (_, labels) in
              (("train", train), ("test", test))}
    source = ImageSource("synthetic", ImageSet(images["train"], train[1].numpy()), ImageSet(images["test"],
                                                                                            test[1].numpy()))
    context = EvalContext(load_target("timm:tinycnn", 8, 1), source, torch.device("cpu"), dict(options or {}))
    context._features.update({"train": train[0], "test": test[0]})
    return context
