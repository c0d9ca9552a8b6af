"""Frozen features: a backbone's pooled embedding of every image of a split."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from pretrainlab.data.color import grayscale
from pretrainlab.data.views import resize_for_eval
from pretrainlab.eval.target import EvalTarget


def match_channels(x_uint8: torch.Tensor, in_chans: int) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, H, W, in_chans): grey images are repeated, colour ones turned to luma."""
    channels = x_uint8.shape[-1]
    if channels == in_chans:
        return x_uint8
    if channels == 1:
        return x_uint8.expand(*x_uint8.shape[:-1], in_chans)
    luma = grayscale(x_uint8.permute(0, 3, 1, 2).float()).round().clamp(0, 255).to(torch.uint8)
    return luma.permute(0, 2, 3, 1)


def normalisation(target: EvalTarget, train_images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's own statistics when it has them, else the evaluated training split's."""
    if target.mean is not None and len(target.mean) == target.in_chans:
        return torch.tensor(target.mean), torch.tensor(target.std)
    step = max(1, len(train_images) // 10_000)
    sample = match_channels(torch.from_numpy(np.ascontiguousarray(train_images[::step])), target.in_chans)
    sample = sample.float() / 255.0
    return sample.mean(dim=(0, 1, 2)), sample.std(dim=(0, 1, 2)).clamp(min=1e-3)


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`module` in eval mode inside the block, its own mode restored after (errors included)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def input_batches(target: EvalTarget, images: np.ndarray, mean: torch.Tensor, std: torch.Tensor,
                  device: torch.device, size: int, batch_size: int) -> Iterator[torch.Tensor]:
    """images (N, H, W, C) uint8 -> normalised inputs (B, in_chans, size, size) on `device`, in order."""
    mean, std = mean.to(device), std.to(device)
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
        yield resize_for_eval(match_channels(chunk, target.in_chans), size, mean, std)


@torch.no_grad()
def extract_features(target: EvalTarget, images: np.ndarray, mean: torch.Tensor, std: torch.Tensor,
                     device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """images (N, H, W, C) uint8 -> pooled features (N, D) float32 on the CPU, in eval mode."""
    with evaluating(target.backbone.to(device)) as backbone:
        return torch.cat([backbone.pooled(x).float().cpu()
                          for x in input_batches(target, images, mean, std, device, target.img_size, batch_size)])
