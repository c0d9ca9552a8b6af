"""Downstream-agnostic universal perturbation and patch: AdvEncoder.

Zhou, Hu, Zhao, Wang, Zhang, Hou, Jin, "Downstream-agnostic Adversarial Examples", ICCV 2023, arXiv 2307.12280.
The attacker holds only the pre-trained encoder and a surrogate set of unlabeled images. A generator maps one
fixed noise vector to one perturbation (an L-inf budget) or one patch (a fixed square region), trained so that
the encoder's features of every perturbed image stop matching its clean features:

    loss = - alpha * InfoNCE(f(x + delta), f(x))       feature-space adversarial term (clean = positive)
           - MSE(HFC(x + delta), HFC(x))               high-frequency guidance: push energy above radius r
           + MSE(x + delta, x)                          keep the change small

Features are standardised with the clean surrogate set's per-dimension mean and std before InfoNCE (the
probes standardise them too): pooled features often share a large common component (all cosines near 1 for
a random or briefly trained CNN), which leaves InfoNCE at log(batch) whatever the perturbation and its
gradient near zero. HFC keeps the Fourier components of the image outside a centred disc of radius r (the
paper's high-frequency component filter, which the authors find carries what encoders rely on). Everything
runs batched on the device. Which downstream head is used never enters training: the fooling rate (share of
test images whose prediction changes) is measured afterwards on heads the attack never saw (universal_heads.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pretrainlab.errors import PretrainlabError


class FeatureModel(nn.Module):
    """Pixels (B, C, S, S) in [0, 1] -> pooled features (B, D) of a backbone, normalisation inside."""

    def __init__(self, backbone: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.pooled((pixels - self.mean) / self.std)


@torch.no_grad()
def feature_statistics(encoder: FeatureModel, pixels: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    """Per-dimension mean and std (D,) of the clean features of `pixels` (N, C, S, S)."""
    device = encoder.mean.device
    features = torch.cat([encoder(pixels[start : start + batch_size].to(device))
                          for start in range(0, len(pixels), batch_size)])
    return features.mean(0), features.std(0).clamp(min=1e-6)


class Generator(nn.Module):
    """A small DCGAN-style generator: noise (1, Z) -> one image (1, C, S, S) in (-1, 1) (tanh)."""

    def __init__(self, channels: int, size: int, noise_dim: int = 64, width: int = 64) -> None:
        super().__init__()
        self.size, self.start = size, max(4, size // 8)
        self.project = nn.Linear(noise_dim, width * 2 * self.start * self.start)
        self.width = width
        self.body = nn.Sequential(
            nn.BatchNorm2d(width * 2), nn.ReLU(),
            nn.ConvTranspose2d(width * 2, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.ConvTranspose2d(width // 2, channels, 4, stride=2, padding=1))

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        x = self.project(noise).view(len(noise), self.width * 2, self.start, self.start)
        x = self.body(x)  # (B, C, 8 * start, 8 * start)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return torch.tanh(x)


def high_frequency(images: torch.Tensor, radius: float) -> torch.Tensor:
    """(B, C, H, W) -> the part of each image whose centred spatial frequency lies outside `radius` (same shape)."""
    height, width = images.shape[-2:]
    rows = torch.arange(height, device=images.device).view(-1, 1) - height / 2
    columns = torch.arange(width, device=images.device).view(1, -1) - width / 2
    keep = ((rows**2 + columns**2).sqrt() >= radius).to(images.dtype)  # (H, W): 1 outside the low-frequency disc
    spectrum = torch.fft.fftshift(torch.fft.fft2(images), dim=(-2, -1))
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum * keep, dim=(-2, -1))).real


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of queries (B, D) against keys (B, D): key i is query i's positive, the other keys its negatives."""
    logits = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T / temperature  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


def patch_mask(size: int, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """(1, 1, S, S) with ones on a square covering `fraction` of the image, at a position drawn by `generator`."""
    side = max(1, round((fraction * size * size) ** 0.5))
    top, left = (int(torch.randint(0, size - side + 1, (1,), generator=generator)) for _ in range(2))
    mask = torch.zeros(1, 1, size, size)
    mask[..., top : top + side, left : left + side] = 1.0
    return mask


@dataclass(frozen=True)
class UniversalSettings:
    """Args:
        eps: L-inf budget of the perturbation (pixel units); the paper uses 10/255.
        patch_fraction: share of the image the patch covers (the paper: 3 %).
        steps, batch_size, lr: generator training (Adam, betas 0.5 / 0.999 as DCGAN).
        alpha: weight of the feature-space term; temperature: of InfoNCE; radius: of the HFC filter, in frequency
            bins (the paper: 8 at 32 px), scaled here with the image size.
    """

    eps: float = 8 / 255
    patch_fraction: float = 0.03
    steps: int = 300
    batch_size: int = 64
    lr: float = 2e-4
    alpha: float = 5.0
    temperature: float = 0.2
    radius: float = 8.0

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 1 or not 0 < self.patch_fraction < 1 or self.steps < 1 or self.batch_size < 2:
            raise PretrainlabError(f"universal attack needs 0 < eps <= 1, 0 < patch_fraction < 1, steps >= 1, "
                                   f"batch_size >= 2; got {self}")


@dataclass
class UniversalAttack:
    """Args:
        perturbation: (1, C, S, S) in [-eps, eps].
        patch: (1, C, S, S) in [0, 1], meaningful where `mask` is 1.
        mask: (1, 1, S, S) the patch region.
        losses: the generator loss every 10 steps, (perturbation, patch).
    """

    perturbation: torch.Tensor
    patch: torch.Tensor
    mask: torch.Tensor
    losses: list[tuple[float, float]]

    def perturb(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels + self.perturbation.to(pixels.device)).clamp(0.0, 1.0)

    def paste(self, pixels: torch.Tensor) -> torch.Tensor:
        mask = self.mask.to(pixels.device)
        return pixels * (1 - mask) + self.patch.to(pixels.device) * mask


def generator_loss(encoder: FeatureModel, clean: torch.Tensor, attacked: torch.Tensor, settings: UniversalSettings,
                   radius: float, statistics: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    mean, std = statistics
    with torch.no_grad():
        clean_features = (encoder(clean) - mean) / std
    adversarial = -info_nce((encoder(attacked) - mean) / std, clean_features, settings.temperature)
    frequency = -F.mse_loss(high_frequency(attacked, radius), high_frequency(clean, radius))
    return settings.alpha * adversarial + frequency + F.mse_loss(attacked, clean)


def train_universal(encoder: FeatureModel, surrogate: torch.Tensor, settings: UniversalSettings, seed: int = 0,
                    show_progress: bool = False) -> UniversalAttack:
    """Trains one generator for the perturbation and one for the patch on unlabeled `surrogate` pixels (N, C, S, S).

    The encoder stays frozen in eval mode; only the generators learn.
    """
    device = encoder.mean.device
    _, channels, size, _ = surrogate.shape
    radius = settings.radius * size / 32
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        generators = [Generator(channels, size).to(device) for _ in range(2)]
        noise = torch.randn(1, 64, generator=generator).to(device)  # the fixed input of both generators
    mask = patch_mask(size, settings.patch_fraction, generator).to(device)
    optimisers = [torch.optim.Adam(g.parameters(), lr=settings.lr, betas=(0.5, 0.999)) for g in generators]
    encoder.eval().requires_grad_(False)
    statistics = feature_statistics(encoder, surrogate)
    losses: list[tuple[float, float]] = []
    for step in tqdm(range(settings.steps), desc="AdvEncoder generators", disable=not show_progress, leave=False):
        index = torch.randint(0, len(surrogate), (min(settings.batch_size, len(surrogate)),), generator=generator)
        clean = surrogate[index].to(device)
        perturbation = settings.eps * generators[0](noise)  # (1, C, S, S)
        patch = (generators[1](noise) + 1) / 2
        attacked = [(clean + perturbation).clamp(0, 1), clean * (1 - mask) + patch * mask]
        step_losses = []
        for optimiser, images in zip(optimisers, attacked, strict=True):
            loss = generator_loss(encoder, clean, images, settings, radius, statistics)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step_losses.append(float(loss.detach()))
        if step % 10 == 0:
            losses.append((step_losses[0], step_losses[1]))
    encoder.requires_grad_(True)
    with torch.no_grad():  # train mode as in training: batch statistics of the one generated image
        return UniversalAttack((settings.eps * generators[0](noise)).cpu(), ((generators[1](noise) + 1) / 2).cpu(),
                               mask.cpu(), losses)


def random_counterpart(attack: UniversalAttack, eps: float, seed: int) -> UniversalAttack:
    """Random noise of the same norm: +-eps signs (the L-inf ball's corners, as large as the perturbation can be)
    and a uniformly random patch at the same place."""
    generator = torch.Generator().manual_seed(seed + 1)
    signs = torch.randint(0, 2, attack.perturbation.shape, generator=generator).float() * 2 - 1
    return UniversalAttack(eps * signs, torch.rand(attack.patch.shape, generator=generator), attack.mask, [])
