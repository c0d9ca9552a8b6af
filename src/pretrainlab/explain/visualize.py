"""Feature visualisation: activation maximisation and network inversion (survey: Qin et al., "How convolutional
neural network see the world - A survey of convolutional neural network visualization methods", arXiv 1804.11191).

- Activation maximisation (Erhan et al. 2009; regularised as in Olah et al., "Feature Visualization", Distill
  2017, and Yosinski et al., arXiv 1506.06579): the image that most excites one channel. Three regularisers keep it
  from turning into high-frequency noise: decorrelation (the image is parametrised by its Fourier spectrum scaled by
  1/frequency, so gradient steps change smooth patterns first), jitter (a random shift of up to `jitter` pixels each
  step) and blur (every `blur_every` steps the spectrum is multiplied by a Gaussian's transfer function).
- Network inversion (Mahendran and Vedaldi, "Understanding Deep Image Representations by Inverting Them",
  arXiv 1412.0035): the image whose activations at a layer match a given image's, with a total-variation prior.
Pixels stay in [0, 1] (a sigmoid of the rendered spectrum) and are normalised as the model's inputs are.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from pretrainlab.explain.model import layer_activations

Render = Callable[[], torch.Tensor]


class FourierImage(nn.Module):
    """`count` images (count, C, S, S) parametrised by a 1/f-scaled spectrum; pixels in [0, 1] via a sigmoid."""

    def __init__(self, count: int, channels: int, size: int, generator: torch.Generator, init_scale: float = 0.01
                 ) -> None:
        super().__init__()
        frequencies = torch.sqrt(torch.fft.fftfreq(size)[:, None] ** 2 + torch.fft.rfftfreq(size)[None] ** 2)
        self.register_buffer("frequencies", frequencies)  # (S, S // 2 + 1), cycles per pixel
        self.register_buffer("scale", 1.0 / frequencies.clamp(min=1.0 / size))
        shape = (count, channels, size, size // 2 + 1)
        self.real = nn.Parameter(torch.randn(shape, generator=generator) * init_scale)
        self.imag = nn.Parameter(torch.randn(shape, generator=generator) * init_scale)
        self.size = size

    def forward(self) -> torch.Tensor:
        spectrum = torch.complex(self.real, self.imag) * self.scale
        image = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")
        return torch.sigmoid(image * 4)  # (count, C, S, S) in [0, 1]

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        """A Gaussian blur of `sigma` pixels, applied to the spectrum (its transfer function exp(-2 pi^2 s^2 f^2))."""
        transfer = torch.exp(-2 * math.pi**2 * sigma**2 * self.frequencies**2)
        self.real.mul_(transfer)
        self.imag.mul_(transfer)


def jittered(images: torch.Tensor, jitter: int, generator: torch.Generator) -> torch.Tensor:
    if jitter <= 0:
        return images
    dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=(dy, dx), dims=(-2, -1))


def channel_activation(model: nn.Module, layer: nn.Module, reshape, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """The layer's output (B, C, h, w) while `model` runs on x (tokens reshaped to maps)."""
    return layer_activations(model, layer, x, reshape)


def pre_activation(model: nn.Module, layer: nn.Module, reshape, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """The layer's output before its final ReLU, when it ends in one (a conv-BN-ReLU stage), else its output.

    Why: a channel that a ReLU holds at zero on the starting image passes no gradient, so maximising the
    post-ReLU activation never leaves the start (Olah et al. optimise pre-ReLU activations for the same reason).
    """
    children = list(layer.modules())
    if not isinstance(children[-1], nn.ReLU):
        return channel_activation(model, layer, reshape, x)
    captured: list[torch.Tensor] = []
    handle = children[-1].register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0].clone()))
    try:  # clone: an in-place ReLU overwrites its input after the hook
        model(x)
    finally:
        handle.remove()
    return reshape(captured[0]) if reshape is not None else captured[0]


def maximise_channels(model: nn.Module, layer: nn.Module, reshape, channels: list[int], size: int,  # noqa: ANN001
                      mean: torch.Tensor, std: torch.Tensor, steps: int = 128, lr: float = 0.05, jitter: int = 2,
                      blur_every: int = 4, blur_sigma: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One image per channel (len(channels), C, S, S) in [0, 1] maximising that channel's mean activation (before
    the layer's final ReLU, see pre_activation), and the final activations after it (len(channels),)."""
    generator = torch.Generator().manual_seed(seed)
    device = mean.device
    image = FourierImage(len(channels), len(mean), size, generator).to(device)
    optimizer = torch.optim.Adam(image.parameters(), lr=lr)
    index = torch.tensor(channels, device=device)
    rows = torch.arange(len(channels), device=device)
    model.eval()
    for step in range(steps):
        x = (jittered(image(), jitter, generator) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        maps = pre_activation(model, layer, reshape, x)  # (K, C_layer, h, w)
        objective = maps[rows, index].mean(dim=(1, 2))  # (K,)
        optimizer.zero_grad()
        (-objective.sum()).backward()
        optimizer.step()
        if blur_every and (step + 1) % blur_every == 0:
            image.blur(blur_sigma)
    with torch.no_grad():
        final = image()
        maps = channel_activation(model, layer, reshape, (final - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1))
        return final, maps[rows, index].mean(dim=(1, 2))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    return (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + (images[..., 1:] - images[..., :-1]).abs().mean()


def invert(model: nn.Module, layer: nn.Module, reshape, target: torch.Tensor, mean: torch.Tensor,  # noqa: ANN001
           std: torch.Tensor, steps: int = 128, lr: float = 0.05, tv_weight: float = 0.05, seed: int = 0
           ) -> tuple[torch.Tensor, float]:
    """Reconstruct (1, C, S, S) in [0, 1] from the layer's activations of the normalised image `target` (1, C, S, S);
    returns the image and the relative error |phi(x) - phi(x0)|^2 / |phi(x0)|^2 reached."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        wanted = channel_activation(model, layer, reshape, target)
    norm = wanted.pow(2).sum().clamp(min=1e-12)
    image = FourierImage(1, target.shape[1], target.shape[-1], generator).to(target.device)
    optimizer = torch.optim.Adam(image.parameters(), lr=lr)
    model.eval()
    error = torch.tensor(float("nan"))
    for _ in range(steps):
        pixels = image()
        x = (pixels - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        error = (channel_activation(model, layer, reshape, x) - wanted).pow(2).sum() / norm
        loss = error + tv_weight * total_variation(pixels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return image().detach(), float(error.detach())
