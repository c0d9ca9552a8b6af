"""Compositional pattern-producing networks (CPPNs) as an image encoding for evolution.

Stanley, "Compositional Pattern Producing Networks: A Novel Abstraction of Development" (2007); used by
Nguyen, Yosinski, Clune (arXiv 1412.1897) to evolve regular fooling images. A CPPN maps each pixel's
coordinates (x, y, distance from the centre, bias) through a small network of mixed activation functions
(sine, Gaussian, tanh, absolute value) to its intensity, so a genome of a few hundred weights draws a whole
image with symmetries and repetitions. Here the topology is fixed and evolution mutates the weights (NEAT,
which the paper uses, also grows the topology); a population is rendered in one batched matrix product.
"""

from __future__ import annotations

import torch

ACTIVATIONS = (torch.sin, lambda x: torch.exp(-x * x), torch.tanh, torch.abs)


class CPPN:
    """A fixed topology: 4 inputs -> `depth` hidden layers of `width` units (activations cycling through
    ACTIVATIONS per unit) -> `channels` sigmoid outputs.

    Args:
        size: image side S; channels: output channels C.
    """

    def __init__(self, size: int, channels: int, width: int = 12, depth: int = 3) -> None:
        self.size, self.channels, self.width, self.depth = size, channels, width, depth
        line = torch.linspace(-1, 1, size)
        y, x = torch.meshgrid(line, line, indexing="ij")
        radius = (x * x + y * y).sqrt()
        self.coordinates = torch.stack([x, y, radius, torch.ones_like(x)], dim=-1).view(-1, 4)  # (S * S, 4)
        self.shapes = [(4, width)] + [(width, width)] * (depth - 1) + [(width, channels)]

    @property
    def genome_size(self) -> int:
        return sum(rows * columns for rows, columns in self.shapes)

    def random(self, count: int, generator: torch.Generator, scale: float = 1.5) -> torch.Tensor:
        """(count, genome_size) weights drawn N(0, scale^2)."""
        return torch.randn(count, self.genome_size, generator=generator) * scale

    def render(self, genomes: torch.Tensor) -> torch.Tensor:
        """(B, genome_size) -> images (B, C, S, S) in [0, 1]."""
        hidden = self.coordinates.to(genomes.device).expand(len(genomes), -1, -1)  # (B, S * S, 4)
        offset = 0
        for index, (rows, columns) in enumerate(self.shapes):
            weights = genomes[:, offset : offset + rows * columns].view(-1, rows, columns)
            offset += rows * columns
            hidden = hidden @ weights  # (B, S * S, columns)
            if index < len(self.shapes) - 1:  # unit u uses ACTIVATIONS[u % 4]: all four computed, one kept per unit
                kind = torch.arange(columns, device=hidden.device) % len(ACTIVATIONS)
                hidden = sum(torch.where(kind == a, activation(hidden), 0.0)
                             for a, activation in enumerate(ACTIVATIONS))
        images = torch.sigmoid(hidden)  # (B, S * S, C)
        return images.transpose(1, 2).reshape(len(genomes), self.channels, self.size, self.size)
