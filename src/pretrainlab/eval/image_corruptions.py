"""ImageNet-C style corruptions at five severities, batched in torch.

Hendrycks and Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", arXiv 1903.12261. The severity parameters are those of its CIFAR-10-C variant (the
authors' make_cifar_c.py, made for 32 px images), the right scale for 28-64 px images: noise,
contrast, brightness, JPEG quality and the pixelate factor do not depend on the image size; the blur's
sigma is in pixels, so it is scaled by side / 32.

Every corruption maps float images (B, C, H, W) in [0, 1] to the same shape in [0, 1]; `corrupt`
wraps them for uint8 (B, H, W, C) batches, quantising the result back to uint8 as saved ImageNet-C
images are. Random corruptions draw from the given generator only, so a seed fixes them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from pretrainlab.errors import PretrainlabError, unknown_name_message

SEVERITIES = (1, 2, 3, 4, 5)
SEVERITY_PARAMETERS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # standard deviation
    "shot_noise": (500, 250, 100, 75, 50),  # photon count at full intensity (Poisson rate)
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma in pixels at 32 px
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the deviation from each channel's mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value
    "jpeg": (80, 65, 58, 50, 40),  # JPEG quality
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # downscaling factor before blowing up again
}
BLUR_TRUNCATE = 4.0  # kernel radius in sigmas, as scikit-image's gaussian filter

Corruption = Callable[[torch.Tensor, float, torch.Generator | None], torch.Tensor]


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp(0, 1)


def shot_noise(x: torch.Tensor, photons: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson photon noise: brighter pixels collect more photons, so their relative noise is smaller."""
    return (torch.poisson(x * photons, generator=generator) / photons).clamp(0, 1)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """(2r + 1,) normalised Gaussian weights, r = ceil(BLUR_TRUNCATE * sigma)."""
    radius = max(1, math.ceil(BLUR_TRUNCATE * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Separable Gaussian blur, edges extended by their nearest pixel (scikit-image's default mode)."""
    kernel = gaussian_kernel(sigma).to(x)
    radius, channels = len(kernel) // 2, x.shape[1]
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    columns = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), rows, groups=channels)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), columns, groups=channels)
    return x.clamp(0, 1)


def contrast(x: torch.Tensor, factor: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Deviations from each image's per-channel mean scaled by `factor`."""
    mean = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return ((x - mean) * factor + mean).clamp(0, 1)


def brightness(x: torch.Tensor, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """HSV value + `shift` (clipped at 1), hue and saturation kept.

    With hue and saturation fixed, RGB is proportional to the value V = max over channels, so the
    image is scaled by V' / V; a black pixel (V = 0, no saturation) becomes grey V' = shift. For one
    channel this is x + shift, clipped.
    """
    value = x.amax(dim=1, keepdim=True)  # (B, 1, H, W)
    new_value = (value + shift).clamp(max=1)
    scaled = x * (new_value / value.clamp(min=1e-12))
    return torch.where(value > 0, scaled, new_value.expand_as(x)).clamp(0, 1)


def jpeg(x: torch.Tensor, quality: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Encoded and decoded as JPEG at `quality` (libjpeg, through torchvision), one image at a time on the CPU."""
    images = list((x * 255).round().to(torch.uint8).cpu())  # B x (C, H, W)
    with warnings.catch_warnings():  # torchvision 0.29 announces a move of its codecs to torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = decode_jpeg(encode_jpeg(images, quality=int(quality)), mode=ImageReadMode.UNCHANGED)
    return torch.stack(decoded).to(x.device, x.dtype) / 255


def box_weights(source: int, target: int) -> torch.Tensor:
    """(target, source): output pixel i averages the input interval [i s, (i + 1) s), s = source / target,
    each input pixel weighted by its overlap (PIL's BOX filter). torch's "area" mode instead averages whole
    overlapping windows, which blurs a mild 28 -> 26 px pixelation as much as a strong one."""
    scale = source / target
    starts = torch.arange(target, dtype=torch.float64)[:, None] * scale  # (target, 1)
    pixels = torch.arange(source, dtype=torch.float64)[None, :]  # (1, source)
    overlap = (torch.minimum(starts + scale, pixels + 1) - torch.maximum(starts, pixels)).clamp(min=0)
    return overlap / scale


def pixelate(x: torch.Tensor, factor: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Box-averaged down to int(side * factor) pixels, then blown up again by nearest neighbour."""
    height, width = x.shape[-2:]
    rows = box_weights(height, max(1, int(height * factor))).to(x)  # (h, H)
    columns = box_weights(width, max(1, int(width * factor))).to(x)  # (w, W)
    small = torch.einsum("ih,bchw,jw->bcij", rows, x, columns)  # (B, C, h, w)
    return F.interpolate(small, size=(height, width), mode="nearest-exact")


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "gaussian_blur": gaussian_blur,
    "contrast": contrast, "brightness": brightness, "jpeg": jpeg, "pixelate": pixelate,
}


def severity_parameter(name: str, severity: int, image_side: int) -> float:
    if name not in CORRUPTIONS:
        raise PretrainlabError(unknown_name_message("corruption", name, list(CORRUPTIONS)))
    if severity not in SEVERITIES:
        raise PretrainlabError(f"severity must be one of {SEVERITIES}, got {severity}")
    parameter = float(SEVERITY_PARAMETERS[name][severity - 1])
    return parameter * image_side / 32 if name == "gaussian_blur" else parameter


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 images (B, H, W, C) -> the same batch with corruption `name` at `severity` (1-5), uint8 (B, H, W, C)."""
    parameter = severity_parameter(name, severity, min(images.shape[1:3]))
    x = images.permute(0, 3, 1, 2).float() / 255  # (B, C, H, W)
    corrupted = CORRUPTIONS[name](x, parameter, generator)
    return (corrupted * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
