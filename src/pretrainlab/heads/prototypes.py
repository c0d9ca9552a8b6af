"""Trainable prototypes: a bias-free linear layer whose rows are kept on the unit sphere (SwAV).

Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", arXiv 2006.09882.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Prototypes(nn.Module):
    """K prototype vectors c_k of size D; scores are z . c_k for unit-norm embeddings z and prototypes.

    As in the paper, the prototypes are renormalised in place after every optimiser step (`normalize_`),
    not inside the forward pass, so their gradient is the plain one of a linear layer.

    Args:
        dim: embedding size D.
        count: number of prototypes K (3000 on ImageNet; about 10x the number of classes on small data).
    """

    def __init__(self, dim: int, count: int) -> None:
        super().__init__()
        if dim < 1 or count < 2:
            raise ValueError(f"prototypes need dim >= 1 and count >= 2, got dim={dim}, count={count}")
        self.weight = nn.Parameter(torch.empty(count, dim))
        nn.init.normal_(self.weight, std=dim**-0.5)
        self.normalize_()

    @torch.no_grad()
    def normalize_(self) -> None:
        """Projects every prototype back onto the unit sphere."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, z: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """(B, D) unit-norm embeddings -> (B, K) scores.

        With `frozen`, the prototypes receive a zero gradient (SwAV freezes them during the first epoch,
        which the paper found stabilises the start). The weight still takes part in the graph, so DDP sees a
        gradient for every parameter.
        """
        weight = self.weight.detach() + 0.0 * self.weight if frozen else self.weight
        return z @ weight.T
