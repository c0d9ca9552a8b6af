"""Colour-space helpers for batched views; inputs are (B, C, H, W) floats in [0, 1]."""

from __future__ import annotations

import torch

# ITU-R 601 luma weights, the ones torchvision's rgb_to_grayscale uses.
LUMA = (0.2989, 0.587, 0.114)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W); a one-channel batch is returned as it is."""
    if x.shape[1] == 1:
        return x
    return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> HSV, every channel in [0, 1]."""
    red, green, blue = x.unbind(1)
    value, argmax = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    saturation = chroma / value.clamp(min=1e-8)
    safe = chroma.clamp(min=1e-8)
    hue_red = ((green - blue) / safe) % 6
    hue_green = (blue - red) / safe + 2
    hue_blue = (red - green) / safe + 4
    hue = torch.where(argmax == 0, hue_red, torch.where(argmax == 1, hue_green, hue_blue))
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue))
    return torch.stack([hue, saturation, value], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) HSV in [0, 1] -> RGB."""
    hue, saturation, value = x.unbind(1)
    # The standard piecewise-linear form: channel n = v - v*s*clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    shifts = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (shifts + hue.unsqueeze(1) * 6) % 6
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return value.unsqueeze(1) - (value * saturation).unsqueeze(1) * ramp


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotates hue by `shift` (B,) turns (torchvision's hue_factor) for every image.

    The same result as hsv_to_rgb(rgb_to_hsv(x)) with the hue moved, in fewer passes over the batch:
    a hue rotation keeps value and chroma, so the hue stays in sextants and saturation is never formed.
    """
    red, green, blue = x.unbind(1)  # (B, H, W) each
    value, argmax = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    safe = chroma.clamp(min=1e-8)
    sextant = torch.where(argmax == 0, (green - blue) / safe,  # hue x 6, any real; the modulo below wraps it
                          torch.where(argmax == 1, (blue - red) / safe + 2, (red - green) / safe + 4))
    sextant = sextant + 6 * shift.view(-1, 1, 1)
    offsets = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (offsets + sextant.unsqueeze(1)) % 6  # (B, 3, H, W)
    ramp = torch.minimum(k, 4 - k).clamp_(0, 1)
    return value.unsqueeze(1) - chroma.unsqueeze(1) * ramp  # grey pixels (chroma 0) keep their value
