"""Batched augmentations: a whole uint8 batch becomes float views on the training device.

Every image gets its own random parameters, as in a per-sample torchvision pipeline, but each
operation runs once for the whole batch. This replaces CPU loader workers that augment image by
image (DESIGN.md: views on the device), which is where per-sample pipelines spend their time.

Differences from torchvision's per-sample transforms, chosen for batching:
- crop, resize and flip are one bilinear `grid_sample` (no antialiasing when a crop shrinks);
- the order of the four colour-jitter operations is drawn once per batch, not once per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from pretrainlab.data.color import adjust_hue, grayscale
from pretrainlab.errors import PretrainlabError


@dataclass(frozen=True)
class ViewSpec:
    """The augmentation recipe of one kind of view (the SimCLR recipe by default).

    `count` views of this kind are made per image; multi-crop methods declare a second spec.
    """

    size: int
    count: int = 1
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise PretrainlabError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise PretrainlabError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.size < 4 or self.count < 1:
            raise PretrainlabError(f"a view needs size >= 4 and count >= 1, got size={self.size} count={self.count}")

    def plain(self) -> ViewSpec:
        """The same size with no augmentation: the whole image, for evaluation."""
        return replace(self, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                       grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


@dataclass
class Views:
    """A batch of views and where they came from.

    Args:
        images: (B, C, S, S) float, normalised.
        boxes: (B, 4) crop boxes (x0, y0, x1, y1) as fractions of the source image, before flipping.
        flipped: (B,) bool, the view was mirrored left-right.
    """

    images: torch.Tensor
    boxes: torch.Tensor
    flipped: torch.Tensor


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float in [0, 1], kept channels-last in memory."""
    return images_uint8.permute(0, 3, 1, 2).float().div_(255.0)


def sample_crop_boxes(batch: int, height: int, width: int, spec: ViewSpec, generator: torch.Generator,
                      device: torch.device, tries: int = 10) -> torch.Tensor:
    """Random-resized-crop boxes, (B, 4) as fractions; torchvision's rule: up to `tries` draws, else the centre."""
    area = height * width
    scale = torch.empty(batch, tries, device=device).uniform_(*spec.crop_scale, generator=generator)
    log_low, log_high = math.log(spec.crop_ratio[0]), math.log(spec.crop_ratio[1])
    ratio = torch.exp(torch.empty(batch, tries, device=device).uniform_(log_low, log_high, generator=generator))
    crop_w = torch.sqrt(area * scale * ratio).round()  # (B, tries) pixels
    crop_h = torch.sqrt(area * scale / ratio).round()
    valid = (crop_w >= 1) & (crop_w <= width) & (crop_h >= 1) & (crop_h <= height)
    first = torch.argmax(valid.int(), dim=1, keepdim=True)  # first valid try per image
    crop_w = crop_w.gather(1, first).squeeze(1)
    crop_h = crop_h.gather(1, first).squeeze(1)
    any_valid = valid.any(dim=1)
    crop_w = torch.where(any_valid, crop_w, torch.full_like(crop_w, min(width, height)))
    crop_h = torch.where(any_valid, crop_h, torch.full_like(crop_h, min(width, height)))
    x0 = torch.floor(torch.rand(batch, device=device, generator=generator) * (width - crop_w + 1))
    y0 = torch.floor(torch.rand(batch, device=device, generator=generator) * (height - crop_h + 1))
    return torch.stack([x0 / width, y0 / height, (x0 + crop_w) / width, (y0 + crop_h) / height], dim=1)


def crop_resize_flip(images: torch.Tensor, boxes: torch.Tensor, flipped: torch.Tensor, size: int) -> torch.Tensor:
    """One bilinear resampling per batch: (B, C, H, W) -> (B, C, size, size)."""
    centre_x = boxes[:, 0] + boxes[:, 2] - 1  # box centre in [-1, 1] coordinates
    centre_y = boxes[:, 1] + boxes[:, 3] - 1
    half_w = (boxes[:, 2] - boxes[:, 0]) * torch.where(flipped, -1.0, 1.0)
    half_h = boxes[:, 3] - boxes[:, 1]
    # The sampling grid of an axis-aligned box is separable: x depends on the column only, y on the row
    # only, so it is built by broadcasting instead of affine_grid's batched matrix product.
    base = (torch.arange(size, device=images.device, dtype=images.dtype) * 2 + 1) / size - 1  # pixel centres
    grid_x = centre_x[:, None] + half_w[:, None] * base  # (B, size)
    grid_y = centre_y[:, None] + half_h[:, None] * base
    grid = torch.stack(torch.broadcast_tensors(grid_x[:, None, :], grid_y[:, :, None]), dim=-1)  # (B, S, S, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _factors(batch: int, strength: float, apply: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-image factors in [1 - strength, 1 + strength], exactly 1 where `apply` is False: (B, 1, 1, 1)."""
    low = max(0.0, 1.0 - strength)
    draws = torch.empty(batch, device=apply.device).uniform_(low, 1.0 + strength, generator=generator)
    return torch.where(apply, draws, torch.ones_like(draws)).view(-1, 1, 1, 1)


def color_jitter(x: torch.Tensor, spec: ViewSpec, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation, hue with per-image factors, on a `jitter_p` share of images."""
    batch, channels = x.shape[:2]
    apply = torch.rand(batch, device=x.device, generator=generator) < spec.jitter_p
    operations = ["brightness", "contrast"] + (["saturation", "hue"] if channels == 3 else [])
    order = torch.randperm(len(operations), generator=generator, device=x.device).tolist()
    for index in order:
        operation = operations[index]
        if operation == "brightness" and spec.brightness > 0:
            x = (x * _factors(batch, spec.brightness, apply, generator)).clamp_(0, 1)
        elif operation == "contrast" and spec.contrast > 0:
            mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
            x = torch.lerp(mean, x, _factors(batch, spec.contrast, apply, generator)).clamp_(0, 1)
        elif operation == "saturation" and spec.saturation > 0:
            x = torch.lerp(grayscale(x), x, _factors(batch, spec.saturation, apply, generator)).clamp_(0, 1)
        elif operation == "hue" and spec.hue > 0:
            shift = torch.empty(batch, device=x.device).uniform_(-spec.hue, spec.hue, generator=generator)
            x = adjust_hue(x, torch.where(apply, shift, torch.zeros_like(shift)))
    return x


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    if x.shape[1] != 3 or p <= 0:
        return x
    chosen = (torch.rand(x.shape[0], device=x.device, generator=generator) < p).view(-1, 1, 1, 1)
    return torch.where(chosen, grayscale(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, spec: ViewSpec, generator: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma, as one grouped convolution per axis."""
    batch, channels, height, width = x.shape
    chosen = torch.rand(batch, device=x.device, generator=generator) < spec.blur_p
    sigma = torch.empty(batch, device=x.device).uniform_(*spec.blur_sigma, generator=generator)
    radius = max(1, min(int(math.ceil(3 * spec.blur_sigma[1])), (min(height, width) - 1) // 2))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (K,)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))  # (B, K)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = kernel.repeat_interleave(channels, dim=0)  # (B * C, K)
    flat = x.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=batch * channels)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=batch * channels)
    return torch.where(chosen.view(-1, 1, 1, 1), flat.view_as(x), x)


def solarize(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    chosen = (torch.rand(x.shape[0], device=x.device, generator=generator) < p).view(-1, 1, 1, 1)
    return torch.where(chosen & (x >= 0.5), 1.0 - x, x)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """`mean`, `std`: (C,) in [0, 1] units."""
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def make_views(images: torch.Tensor, spec: ViewSpec, generator: torch.Generator, mean: torch.Tensor,
               std: torch.Tensor) -> Views:
    """Makes one view per image of `images` ((B, C, H, W) float in [0, 1]) following `spec`."""
    batch, _, height, width = images.shape
    boxes = sample_crop_boxes(batch, height, width, spec, generator, images.device)
    flipped = torch.rand(batch, device=images.device, generator=generator) < spec.flip_p
    x = crop_resize_flip(images, boxes, flipped, spec.size)
    if spec.jitter_p > 0:
        x = color_jitter(x, spec, generator)
    x = random_grayscale(x, spec.grayscale_p, generator)
    if spec.blur_p > 0:
        x = gaussian_blur(x, spec, generator)
    if spec.solarize_p > 0:
        x = solarize(x, spec.solarize_p, generator)
    return Views(normalize(x, mean, std), boxes, flipped)


def make_view_set(images: torch.Tensor, spec: ViewSpec, generator: torch.Generator, mean: torch.Tensor,
                  std: torch.Tensor) -> list[Views]:
    """`spec.count` independent views of every image, made in one pass over a (count x B) batch.

    One pass over the stacked copies costs less than `count` passes (fewer, larger operations), and each
    copy still draws its own crop, flip and colour parameters.
    """
    if spec.count == 1:
        return [make_views(images, spec, generator, mean, std)]
    stacked = make_views(images.repeat(spec.count, 1, 1, 1), spec, generator, mean, std)  # (count B, C, S, S)
    return [Views(*parts) for parts in zip(stacked.images.chunk(spec.count), stacked.boxes.chunk(spec.count),
                                           stacked.flipped.chunk(spec.count), strict=True)]


def resize_for_eval(images_uint8: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, size, size) normalised float, the whole image (antialiased resize)."""
    x = to_float(images_uint8)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return normalize(x, mean, std)
