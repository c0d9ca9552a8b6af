"""MLP projection heads (SimCLR's g(.), BYOL's projector and predictor, SimCLRv2's deeper head)."""

from __future__ import annotations

import torch
import torch.nn as nn


class ProjectionHead(nn.Module):
    """Linear -> [BatchNorm] -> ReLU, repeated, then a final Linear (optionally batch-normalised).

    Args:
        in_dim: backbone embedding size.
        hidden_dim: width of the hidden layers.
        out_dim: projection size.
        num_layers: number of Linear layers (2 in SimCLR, 3 in SimCLRv2).
        batch_norm: BatchNorm after each hidden Linear.
        last_batch_norm: affine-free BatchNorm on the output (SimCLRv2, Barlow Twins-style heads).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True,
                 last_batch_norm: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim, bias=not last_batch_norm))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        return self.layers(x)

    def hidden_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every Linear block after its activation, then the final output: [(B, d_i)]."""
        outputs = []
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                outputs.append(x)
        outputs.append(x)
        return outputs

    @property
    def num_outputs(self) -> int:
        """How many entries `hidden_outputs` returns (the number of Linear layers)."""
        return sum(isinstance(layer, nn.ReLU) for layer in self.layers) + 1

    def prefix(self, index: int) -> nn.Sequential:
        """The layers that compute `hidden_outputs(x)[index]`, sharing this head's modules (not copies).

        Keeping `prefix(0)` on top of the backbone is SimCLRv2's "fine-tune from the first head layer".
        """
        ends = [position + 1 for position, layer in enumerate(self.layers) if isinstance(layer, nn.ReLU)]
        ends.append(len(self.layers))
        if not 0 <= index < len(ends):
            raise IndexError(f"this projection head has outputs 0 to {len(ends) - 1}, not {index}")
        return nn.Sequential(*list(self.layers)[: ends[index]])
