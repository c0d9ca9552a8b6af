"""A scattering-transform front end followed by a small residual CNN (ScatSimCLR's encoder).

Kinakh, Taran, Voloshynovskiy, "ScatSimCLR: self-supervised contrastive learning with pretext task
regularization for small-scale datasets", arXiv 2108.13939; the hybrid network of Oyallon, Belilovsky,
Zagoruyko, "Scaling the Scattering Transform: Deep Hybrid Networks", arXiv 1703.08961.

The 2-D scattering transform (Morlet wavelets at J scales and L orientations, modulus, low-pass, up to order
2) is a fixed, non-learned, stable and translation-invariant-up-to-2^J front end: it turns a (C, H, W) image
into C * (1 + J L + L^2 J (J - 1) / 2) maps of size H / 2^J. A BatchNorm without affine parameters
standardises the coefficients, a 3x3 convolution maps them to `width` channels and residual basic blocks
(no further downsampling) learn on top; the features are the average of the last map. ScatSimCLR trains this
encoder with SimCLR plus a pretext task (rotation or jigsaw): `--method pretext_reg` here.

The transform is kymatio's (0.3, `ScatteringTorch2D`), imported from its 2-D module directly: `kymatio.torch`
also imports the 3-D transform, which fails with SciPy >= 1.15 (`scipy.special.sph_harm` was removed). Its
filters are buffers, so they travel with the state dict. Sizes here are the project's (the paper's adapter
widths are not reproduced).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D
from timm.models import register_model
from timm.models.resnet import BasicBlock

from pretrainlab.backbones.model_api import StagedNet, check_divisible, drop_factory_kwargs


def scattering_channels(in_chans: int, scales: int, orientations: int) -> int:
    """Maps per image: C (1 + J L + L^2 J (J - 1) / 2) for a second-order transform."""
    return in_chans * (1 + scales * orientations + orientations**2 * scales * (scales - 1) // 2)


class ScatteringFrontEnd(nn.Module):
    """(B, C, H, W) -> standardised scattering coefficients (B, K, H / 2^J, W / 2^J), computed in fp32."""

    def __init__(self, img_size: int, in_chans: int, scales: int, orientations: int) -> None:
        super().__init__()
        self.scattering = ScatteringTorch2D(J=scales, shape=(img_size, img_size), L=orientations, max_order=2)
        self.channels = scattering_channels(in_chans, scales, orientations)
        self.norm = nn.BatchNorm2d(self.channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            coefficients = self.scattering(x.float().contiguous())  # (B, C, K / C, h, w)
        return self.norm(coefficients.flatten(1, 2))


class ScatNet(StagedNet):
    """Scattering front end, 3x3 convolution to `width`, `depth` residual basic blocks, average pooling.

    Args:
        scales: J, the number of octaves (the output is 2^J times smaller).
        orientations: L, wavelet orientations.
    """

    def __init__(self, img_size: int = 32, in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg",
                 scales: int = 2, orientations: int = 8, width: int = 128, depth: int = 8,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        check_divisible(img_size, 2**scales, "scattering's subsampling 2^J")
        front = ScatteringFrontEnd(img_size, in_chans, scales, orientations)
        self.stem = nn.Sequential(front, nn.Conv2d(front.channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.stages = nn.ModuleList(BasicBlock(width, width) for _ in range(depth))
        self.feature_info = [{"num_chs": width, "reduction": 2**scales, "module": f"stages.{i}"}
                             for i in range(depth)]
        self.init_classifier(width, num_classes, global_pool, drop_rate)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def _scatnet(**kwargs: Any) -> ScatNet:
    return ScatNet(**drop_factory_kwargs(kwargs))


@register_model
def test_scatnet(**kwargs: Any) -> ScatNet:
    """A tiny ScatNet for tests (J = 2, L = 4)."""
    return _scatnet(**{"orientations": 4, "width": 8, "depth": 1, **kwargs})


@register_model
def scatnet_nano(**kwargs: Any) -> ScatNet:
    """J = 2, L = 8, 64 channels, two blocks: for 32 px images on a CPU."""
    return _scatnet(**{"width": 64, "depth": 2, **kwargs})


@register_model
def scatnet_cifar(**kwargs: Any) -> ScatNet:
    """J = 2, L = 8, 128 channels, eight blocks at 32 px (a CIFAR-sized hybrid network)."""
    return _scatnet(**kwargs)
