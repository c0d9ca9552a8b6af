"""DINO's projection head: an MLP, an L2-normalised bottleneck, and a weight-normalised last layer.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", arXiv 2104.14294 (appendix);
iBOT (arXiv 2111.07832) and DINOv2 (arXiv 2304.07193) reuse it for patch tokens.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class NormalizedLinear(nn.Module):
    """A bias-free linear layer whose rows are unit vectors times a gain: weight normalisation.

    Written out instead of `torch.nn.utils.weight_norm` (deprecated) so frozen copies and EMA
    teachers see plain parameters.

    Args:
        fixed_gain: the gain is fixed at 1 (DINO's `norm_last_layer=True`, the stabler choice for ViTs).
    """

    def __init__(self, in_dim: int, out_dim: int, fixed_gain: bool = True) -> None:
        super().__init__()
        self.direction = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.direction, std=0.02)
        self.gain = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fixed_gain)

    def forward(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim); `detach` gives this layer a zero gradient (the input still gets one)."""
        weight = self.gain * F.normalize(self.direction, dim=1)
        if detach:
            # Zero rather than no gradient: DDP expects one for every trained parameter, and the
            # normalised direction is unaffected by the weight decay it still receives.
            weight = weight.detach() + 0.0 * weight
        return F.linear(x, weight)


class DINOHead(nn.Module):
    """Linear -> GELU (x num_layers - 1) -> bottleneck Linear -> L2 normalise -> NormalizedLinear.

    Args:
        in_dim: backbone embedding size.
        hidden_dim: MLP width (2048 in the paper).
        bottleneck_dim: size before the last layer (256 in the paper).
        out_dim: number of prototypes K (65536 in the paper; a few thousand suffice on small data).
        num_layers: Linear layers before the last one (3 in the paper).
        batch_norm: BatchNorm in the MLP (off for ViTs in the paper).
        norm_last_layer: fix the last layer's gain at 1.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, out_dim: int = 65536,
                 num_layers: int = 3, batch_norm: bool = False, norm_last_layer: bool = True) -> None:
        super().__init__()
        if num_layers < 1 or min(hidden_dim, bottleneck_dim, out_dim) < 1:
            raise ValueError(f"DINO head needs num_layers >= 1 and positive sizes, got {num_layers}, "
                             f"{hidden_dim}, {bottleneck_dim}, {out_dim}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            width = hidden_dim
        layers.append(nn.Linear(width, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = NormalizedLinear(bottleneck_dim, out_dim, fixed_gain=norm_last_layer)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, freeze_last_layer: bool = False) -> torch.Tensor:
        """(B, in_dim) or (B, N, in_dim) -> logits (..., out_dim)."""
        if x.ndim == 3 and any(isinstance(m, nn.BatchNorm1d) for m in self.mlp):
            batch, tokens = x.shape[:2]
            return self.forward(x.flatten(0, 1), freeze_last_layer).unflatten(0, (batch, tokens))
        bottleneck = F.normalize(self.mlp(x), dim=-1)
        return self.last_layer(bottleneck, detach=freeze_last_layer)

    def hidden_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, in_dim) -> [after each GELU, normalised bottleneck, logits]."""
        outputs = []
        for layer in self.mlp:
            x = layer(x)
            if isinstance(layer, nn.GELU):
                outputs.append(x)
        bottleneck = F.normalize(x, dim=-1)
        return [*outputs, bottleneck, self.last_layer(bottleneck)]
