"""The RAW defence: RGB -> simulated Bayer RAW with sensor noise -> a small learned ISP -> RGB, before the model.

Zhang, Dong, Heide, "All You Need is RAW: Defending Against Adversarial Attacks with Camera Image
Pipelines", arXiv 2112.09219: project the input onto the manifold of natural camera measurements and back, so
perturbations that do not survive a real capture are removed. The RGB -> RAW direction here is the
physically based "unprocessing" of Brooks et al. ("Unprocessing Images for Learned Raw Denoising", arXiv
1811.11127): sRGB to linear (gamma 2.2), inverse white-balance gains, an RGGB Bayer mosaic, shot and read
noise (variance shot * x + read), and a 10-bit analogue-to-digital quantisation. The ISP (demosaic, denoise,
white balance, gamma) is a small CNN trained to reconstruct clean images from their simulated RAW only; it
never sees an adversarial image.

The defence is randomised (fresh sensor noise every call) and not differentiable (quantisation), so it is
evaluated with adaptive attacks: BPDA (Athalye et al., "Obfuscated Gradients Give a False Sense of
Security", arXiv 1802.00420) passes the gradient through the quantiser as the identity, and EOT averages
gradients over noise draws (EOT-PGD, AutoAttack's "rand" version). `gradient="exact"` keeps rounding's
zero gradient instead, to show how a naive attack overstates the defence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pretrainlab.errors import PretrainlabError

GAINS = (1 / 2.0, 1.0, 1 / 1.7)  # inverse white balance of red, green, blue (Brooks et al. sample ~1.9 and ~1.5)
GRADIENTS = ("bpda", "exact")


class StraightThroughRound(torch.autograd.Function):
    """round(x) forward, identity backward (BPDA's approximation of a quantiser)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.round(x)

    @staticmethod
    def backward(ctx: object, gradient: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return gradient


def bayer_sites(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(3, H, W) one-hot colour of each photosite of an RGGB mosaic."""
    rows = torch.arange(height, device=device).view(-1, 1) % 2
    columns = torch.arange(width, device=device).view(1, -1) % 2
    red = ((rows == 0) & (columns == 0)).float()
    blue = ((rows == 1) & (columns == 1)).float()
    return torch.stack([red, 1 - red - blue, blue])


@dataclass(frozen=True)
class SensorModel:
    """Args:
        shot, read: noise variance shot * signal + read, in units of the full scale (Brooks et al.'s ranges).
        bits: ADC resolution.
    """

    shot: float = 0.002
    read: float = 0.0001
    bits: int = 10


class RawCapture(nn.Module):
    """Pixels (B, C, H, W) in [0, 1] (C = 1 or 3) -> a noisy quantised Bayer mosaic (B, 1, H, W) in [0, 1]."""

    def __init__(self, sensor: SensorModel = SensorModel(), gradient: str = "bpda") -> None:
        super().__init__()
        if gradient not in GRADIENTS:
            raise PretrainlabError(f"unknown RAW gradient mode '{gradient}'; valid: {', '.join(GRADIENTS)}")
        self.sensor, self.gradient = sensor, gradient
        self.register_buffer("gains", torch.tensor(GAINS).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        rgb = pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels
        linear = rgb.clamp(1e-6, 1).pow(2.2) * self.gains  # sRGB -> linear -> undo white balance
        mosaic = (linear * bayer_sites(*pixels.shape[-2:], pixels.device)).sum(1, keepdim=True)  # (B, 1, H, W)
        variance = self.sensor.shot * mosaic + self.sensor.read
        noise = torch.randn(mosaic.shape, generator=generator, device=mosaic.device)
        noisy = (mosaic + variance.sqrt() * noise).clamp(0, 1)
        levels = 2**self.sensor.bits - 1
        rounded = StraightThroughRound.apply(noisy * levels) if self.gradient == "bpda" else torch.round(noisy * levels)
        return rounded / levels


class SmallISP(nn.Module):
    """A learned image signal processor: mosaic (B, 1, H, W) + site colours -> pixels (B, C, H, W) in [0, 1]."""

    def __init__(self, out_channels: int, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(4, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, mosaic: torch.Tensor) -> torch.Tensor:
        sites = bayer_sites(*mosaic.shape[-2:], mosaic.device).expand(len(mosaic), -1, -1, -1)
        return torch.sigmoid(self.body(torch.cat([mosaic, mosaic * sites], dim=1)))


BACKWARDS = ("through", "identity")


class RawDefence(nn.Module):
    """Pixels -> simulated RAW capture -> the trained ISP -> pixels; the ISP's weights are frozen.

    Args:
        backward: "through" differentiates the capture and the ISP (the quantiser as the capture says);
            "identity" is BPDA of the whole preprocessing as the identity (Athalye et al., "Obfuscated Gradients
            Give a False Sense of Security", arXiv 1802.00420, section 4.1: g(x) ~ x), which an attacker tries
            when the gradient through the pre-processing itself is small or misleading (the sRGB-to-linear
            curve is flat near black, where Fashion-MNIST's background lies).
    """

    def __init__(self, capture: RawCapture, isp: SmallISP, backward: str = "through") -> None:
        super().__init__()
        if backward not in BACKWARDS:
            raise PretrainlabError(f"unknown RAW defence backward '{backward}'; valid: {', '.join(BACKWARDS)}")
        self.capture, self.isp, self.backward = capture, isp.requires_grad_(False).eval(), backward

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        restored = self.isp(self.capture(pixels))
        if self.backward == "identity":
            return pixels + (restored - pixels).detach()  # forward: the defence; backward: the identity
        return restored

    def train(self, mode: bool = True) -> RawDefence:
        """The ISP stays in eval mode whatever the attacked model's mode: it is never trained here."""
        super().train(mode)
        self.isp.eval()
        return self


@dataclass(frozen=True)
class IspTraining:
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3


def train_isp(clean_images: np.ndarray, to_pixels: Callable[[np.ndarray], torch.Tensor], channels: int,
              capture: RawCapture, settings: IspTraining = IspTraining(), device: torch.device | str = "cpu",
              seed: int = 0, show_progress: bool = False) -> SmallISP:
    """Trains the ISP to reconstruct clean images from their simulated RAW (MSE), with fresh noise every batch.

    Args:
        clean_images: uint8 (N, H, W, C) clean training images: the only images the ISP ever sees.
        to_pixels: uint8 (B, H, W, C) -> pixels (B, channels, S, S) in [0, 1] at the model's size.
    """
    generator = torch.Generator().manual_seed(seed)
    noise_generator = torch.Generator(device=device).manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        isp = SmallISP(channels).to(device)
    optimiser = torch.optim.Adam(isp.parameters(), lr=settings.lr)
    for step in tqdm(range(settings.steps), desc="training the ISP on clean images", disable=not show_progress,
                     leave=False):
        index = torch.randint(0, len(clean_images), (min(settings.batch_size, len(clean_images)),),
                              generator=generator).numpy()
        clean = to_pixels(clean_images[np.sort(index)]).to(device)
        with torch.no_grad():
            mosaic = capture(clean, noise_generator)
        for group in optimiser.param_groups:  # cosine decay to a tenth
            group["lr"] = settings.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / settings.steps)))
        loss = F.mse_loss(isp(mosaic), clean)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return isp.eval()


def psnr(reconstruction: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (over the whole batch)."""
    mse = float(F.mse_loss(reconstruction, reference))
    return 10 * math.log10(1 / max(mse, 1e-12))
