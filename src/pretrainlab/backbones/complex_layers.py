"""Complex-valued layers on real tensors: a complex map with C channels is (B, 2C, H, W), real parts first.

Keeping complex numbers as two real halves lets every PyTorch tool (channels_last, autocast, DDP, safetensors)
work unchanged, and a complex convolution is then one real convolution with the block weight
[[W_r, -W_i], [W_i, W_r]]. Layers follow Trabelsi et al., "Deep Complex Networks", arXiv 1705.09792:
complex convolution, complex batch normalisation (whitening by the inverse square root of each channel's 2x2
covariance of real and imaginary parts, then a learned 2x2 scale and a complex shift), CReLU and modReLU.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2C, ...) -> real (B, C, ...), imaginary (B, C, ...)."""
    return x.chunk(2, dim=1)


def magnitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """|z| of (B, 2C, H, W): (B, C, H, W); eps keeps the gradient finite at 0."""
    real, imag = split(x)
    return torch.sqrt(real * real + imag * imag + eps)


class ComplexConv2d(nn.Module):
    """(W_r + i W_i) * (x_r + i x_i) as one real convolution: (B, 2 C_in, H, W) -> (B, 2 C_out, H', W')."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.stride, self.padding = stride, padding
        self.weight_real = nn.Parameter(torch.empty(out_chs, in_chs, kernel_size, kernel_size))
        self.weight_imag = nn.Parameter(torch.empty(out_chs, in_chs, kernel_size, kernel_size))
        # Complex He initialisation: each part has variance 1 / fan_in, so the complex weight has 2 / fan_in.
        std = 1.0 / math.sqrt(in_chs * kernel_size * kernel_size)
        nn.init.normal_(self.weight_real, std=std)
        nn.init.normal_(self.weight_imag, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch.cat([torch.cat([self.weight_real, -self.weight_imag], dim=1),
                            torch.cat([self.weight_imag, self.weight_real], dim=1)], dim=0)
        return F.conv2d(x, weight, stride=self.stride, padding=self.padding)


class ComplexBatchNorm2d(nn.Module):
    """Complex BN: centre, whiten with V^(-1/2) (V the 2x2 covariance of (real, imag) per channel), then
    gamma (a symmetric 2x2 matrix, initialised to I / sqrt(2)) and a complex beta."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.tensor([[1 / math.sqrt(2)], [0.0], [1 / math.sqrt(2)]]).repeat(1, channels))
        self.bias = nn.Parameter(torch.zeros(2, channels))
        self.register_buffer("running_mean", torch.zeros(2, channels))
        self.register_buffer("running_covar", torch.tensor([[1.0], [0.0], [1.0]]).repeat(1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real, imag = (part.float() for part in split(x))
        if self.training:
            mean = torch.stack([real.mean(dim=(0, 2, 3)), imag.mean(dim=(0, 2, 3))])  # (2, C)
            real, imag = real - mean[0].view(1, -1, 1, 1), imag - mean[1].view(1, -1, 1, 1)
            covar = torch.stack([(real * real).mean(dim=(0, 2, 3)), (real * imag).mean(dim=(0, 2, 3)),
                                 (imag * imag).mean(dim=(0, 2, 3))])  # (3, C): Vrr, Vri, Vii
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_covar.lerp_(covar, self.momentum)
        else:
            mean, covar = self.running_mean, self.running_covar
            real, imag = real - mean[0].view(1, -1, 1, 1), imag - mean[1].view(1, -1, 1, 1)
        v_rr, v_ri, v_ii = covar[0] + self.eps, covar[1], covar[2] + self.eps
        # Inverse square root of [[v_rr, v_ri], [v_ri, v_ii]] in closed form (s = sqrt(det), t = sqrt(trace + 2 s)).
        s = torch.sqrt(v_rr * v_ii - v_ri * v_ri)
        t = torch.sqrt(v_rr + v_ii + 2 * s)
        inverse = 1.0 / (s * t)
        w_rr, w_ri, w_ii = ((v_ii + s) * inverse, -v_ri * inverse, (v_rr + s) * inverse)
        w_rr, w_ri, w_ii = (w.view(1, -1, 1, 1) for w in (w_rr, w_ri, w_ii))
        white_real, white_imag = w_rr * real + w_ri * imag, w_ri * real + w_ii * imag
        g_rr, g_ri, g_ii = (g.view(1, -1, 1, 1) for g in self.weight)
        out_real = g_rr * white_real + g_ri * white_imag + self.bias[0].view(1, -1, 1, 1)
        out_imag = g_ri * white_real + g_ii * white_imag + self.bias[1].view(1, -1, 1, 1)
        return torch.cat([out_real, out_imag], dim=1).to(x.dtype)


class CReLU(nn.ReLU):
    """ReLU on the real and the imaginary part separately (a ReLU on the stacked halves)."""


class ModReLU(nn.Module):
    """ReLU(|z| + b) z / |z|: keeps the phase, thresholds the magnitude (Arjovsky et al., arXiv 1511.06464).

    b starts at -0.5: after complex BN |z| is about 1.25, so most values pass and small ones are cut.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.full((channels,), -0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = magnitude(x)  # (B, C, H, W)
        scale = F.relu(size + self.bias.view(1, -1, 1, 1)) / size
        return x * torch.cat([scale, scale], dim=1)


class MagnitudeMaxPool2d(nn.Module):
    """Keeps, in each window, the complex value of largest magnitude: (B, 2C, H, W) -> (B, 2C, H / k, W / k)."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, indices = F.max_pool2d(magnitude(x), self.kernel_size, return_indices=True)  # (B, C, h, w)
        real, imag = split(x)
        flat = indices.flatten(2)
        pooled = [part.flatten(2).gather(2, flat).view_as(indices) for part in (real, imag)]
        return torch.cat(pooled, dim=1)
