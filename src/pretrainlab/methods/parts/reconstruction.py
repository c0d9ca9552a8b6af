"""Reconstruction grids of masked image modelling: input, masked input, reconstruction, one column per image.

Methods that reconstruct pixels implement `Method.reconstruction_grid` with `patch_reconstruction_grid`;
the pipeline saves the grid as `reconstructions.png` in the run folder at the end of pre-training.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pretrainlab.atomic import atomic_path
from pretrainlab.backbones.vit_parts import patchify, unpatchify
from pretrainlab.data.views import resize_for_eval

log = logging.getLogger(__name__)

MASKED_GREY = 0.5  # hidden patches are shown mid-grey: black is Fashion-MNIST's and MNIST's background


def to_display(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised (B, C, H, W) -> [0, 1] for display."""
    return (images * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).clamp(0.0, 1.0)


def patch_reconstruction_grid(images: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor, patch_size: int,
                              mean: torch.Tensor, std: torch.Tensor, normalized_prediction: bool) -> torch.Tensor:
    """Three rows of B images in [0, 1]: inputs, masked inputs, reconstructions (visible patches pasted back).

    Args:
        images: (B, C, H, W) normalised inputs.
        prediction: (B, N, p * p * C) predicted patches, in the layout of `patchify`.
        mask: (B, N) bool, True = hidden.
        normalized_prediction: the prediction is per-patch standardised (`norm_pix_loss`); it is mapped back
            with each hidden patch's true mean and spread, as MAE's own visualisations do.
    Returns:
        (3 B, C, H, W).
    """
    channels = images.shape[1]
    grid = (images.shape[2] // patch_size, images.shape[3] // patch_size)
    target = patchify(images, patch_size)  # (B, N, P)
    prediction = prediction.float()
    if normalized_prediction:
        prediction = prediction * (target.var(dim=-1, keepdim=True) + 1e-6).sqrt() + target.mean(dim=-1, keepdim=True)
    hidden = mask.unsqueeze(-1)  # (B, N, 1)
    reconstruction = unpatchify(torch.where(hidden, prediction, target), patch_size, channels, grid)
    shown = to_display(images, mean, std)
    hidden_pixels = unpatchify(hidden.expand_as(target).float(), patch_size, channels, grid).bool()
    masked = torch.where(hidden_pixels, torch.full_like(shown, MASKED_GREY), shown)
    return torch.cat([shown, masked, to_display(reconstruction, mean, std)])


@torch.no_grad()
def save_reconstruction_grid(method: torch.nn.Module, images_uint8: np.ndarray, path: Path,
                             device: torch.device, count: int = 8, seed: int = 0) -> bool:
    """Saves `method.reconstruction_grid` of the first `count` images as a PNG; False when it reconstructs nothing.

    Args:
        images_uint8: (N, H, W, C) training images; the first `count` are shown, always the same ones, resized
            (whole, antialiased) to the training size `method.context.img_size`: a method's masks, position
            embeddings and decoders are made for that size, which may differ from the stored images' size.
    """
    from torchvision.utils import save_image

    images = torch.from_numpy(np.ascontiguousarray(images_uint8[:count])).to(device)
    normalised = resize_for_eval(images, method.context.img_size, method.mean, method.std)  # (B, C, S, S)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = method.training
    method.eval()
    try:
        grid = method.reconstruction_grid(normalised, generator)
    finally:
        method.train(was_training)
    if grid is None:
        return False
    with atomic_path(Path(path)) as tmp:
        save_image(grid.float().cpu(), str(tmp), nrow=len(normalised), padding=1, format="png")
    log.info("reconstructions saved to %s", path)
    return True
