"""RandAugment on a uint8 batch: each image its own draw of torchvision's RandAugment.

Cubuk, Zoph, Shlens, Le, "RandAugment: Practical automated data augmentation with a reduced search
space", arXiv 1909.13719: `num_ops` operations drawn uniformly from a fixed list (rotate, shear,
translate, brightness, contrast, sharpness, posterize, solarize, equalize, auto-contrast, ...), all at
one global `magnitude` (0-30 on torchvision's scale; 9 is the paper's ImageNet value, the medical MAE
recipe of arXiv 2210.12843 tunes it for X-rays). torchvision's transform is wrapped, not re-written;
it draws one operation per call, so it is called image by image (the batch's other views stay batched).
Its randomness comes from torch's global generator, so each batch seeds a forked one from the caller's
generator: a step's augmentation repeats exactly for a seed.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from pretrainlab.errors import PretrainlabError

MAX_MAGNITUDE = 30  # torchvision's default num_magnitude_bins (31) - 1


def check_magnitude(magnitude: object) -> int:
    """`magnitude` as an int in [0, MAX_MAGNITUDE], else PretrainlabError."""
    try:
        value = float(magnitude)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(magnitude, bool) or not value.is_integer() or not 0 <= value <= MAX_MAGNITUDE:
        raise PretrainlabError(f"randaugment is a magnitude, a whole number in 0..{MAX_MAGNITUDE} "
                               f"(9 is the paper's ImageNet value), got {magnitude!r}")
    return int(value)


def randaugment_batch(images: torch.Tensor, magnitude: int, generator: torch.Generator,
                      num_ops: int = 2) -> torch.Tensor:
    """uint8 images (B, H, W, C) -> (B, H, W, C) uint8, each image with its own `num_ops` operations."""
    transform = v2.RandAugment(num_ops=num_ops, magnitude=check_magnitude(magnitude))
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    devices = [images.device.index or 0] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        channels_first = images.permute(0, 3, 1, 2)  # (B, C, H, W): torchvision's layout
        augmented = [transform(image) for image in channels_first]  # each (C, H, W)
    return torch.stack(augmented).permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
