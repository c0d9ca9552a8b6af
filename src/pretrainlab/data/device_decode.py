"""JPEG decoding on the training device (`--gpu-decode`): loader workers hand over bytes, the GPU decodes.

torchvision's `decode_jpeg(list, device="cuda")` decodes a whole batch with nvJPEG; each image is then
resized to cover the decode box and centre-cropped, as the CPU path does (bilinear with antialiasing,
so pixels differ from PIL's by rounding). A member nvJPEG refuses is decoded by PIL on the CPU; one that
PIL refuses too is replaced by another image of the batch and counted as skipped, so batches keep their size.
"""

from __future__ import annotations

import logging

import torch
from torchvision.io import ImageReadMode

from pretrainlab.data.decode import box_shape, cover_and_crop_tensor, decode_image, decode_jpegs

log = logging.getLogger(__name__)


def decode_batch(payloads: list[torch.Tensor], size: int, aspect: float, mode: str,
                 device: torch.device) -> tuple[torch.Tensor, int]:
    """Payloads (JPEG bytes (n,) or decoded (H, W, C) uint8) -> ((B, H, W, C) uint8 on `device`, skipped count)."""
    height, width = box_shape(size, aspect)
    read_mode = ImageReadMode.GRAY if mode == "L" else ImageReadMode.RGB
    jpeg_rows = [i for i, payload in enumerate(payloads) if payload.ndim == 1]
    images: list[torch.Tensor | None] = [None if p.ndim == 1 else p.to(device, non_blocking=True) for p in payloads]
    decoded = decode_jpegs([payloads[i].cpu() for i in jpeg_rows], read_mode, device) if jpeg_rows else []
    for row, image in zip(jpeg_rows, decoded, strict=True):
        if image is not None:
            images[row] = cover_and_crop_tensor(image, height, width)
            continue
        fallback = decode_image(payloads[row].cpu().numpy().tobytes(), size, mode, aspect)
        images[row] = None if fallback is None else torch.from_numpy(fallback).to(device)
    good = [image for image in images if image is not None]
    if not good:
        raise RuntimeError("no image of the batch could be decoded")
    skipped = len(images) - len(good)
    if skipped:
        log.warning("skipped %d undecodable JPEG members; their rows repeat other images of the batch", skipped)
    return torch.stack([image if image is not None else good[i % len(good)] for i, image in enumerate(images)]), skipped
