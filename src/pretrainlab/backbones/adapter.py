"""The one interface every method and protocol uses on a timm model, by wrapping it (never patching it)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


class Backbone(nn.Module):
    """Wraps a timm model created with `num_classes=0`.

    Attributes:
        model: the timm model; its state dict is what gets exported.
        name: the timm registry name; `create_kwargs` recreate it with `timm.create_model`.
        embed_dim: size of `pooled` features.
        has_tokens: the model is a transformer with a token sequence.
    """

    def __init__(self, model: nn.Module, name: str, create_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.create_kwargs = dict(create_kwargs)
        self.embed_dim = int(model.num_features)
        self.has_tokens = hasattr(model, "patch_embed") and hasattr(model, "blocks")
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0)) if self.has_tokens else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(x)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D): the global representation every protocol evaluates."""
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> [(B, C_i, H_i, W_i)] at increasing depth (timm's forward_intermediates)."""
        return list(self.model.forward_intermediates(x, intermediates_only=True))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, D), prefix tokens (class, registers) first; transformers only."""
        if not self.has_tokens:
            raise TypeError(f"backbone '{self.name}' is convolutional and has no tokens; use feature_maps")
        return self.model.forward_features(x)

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), the patch tokens without prefix tokens."""
        return self.tokens(x)[:, self.num_prefix_tokens :]

    @property
    def output_stride(self) -> int | None:
        """Pixels of input per cell of the last feature map (timm's `feature_info` reduction: 32 for an
        ImageNet ResNet, 8 for the CIFAR-stem one); None where the model does not say."""
        info = getattr(self.model, "feature_info", None)
        stages = info.get_dicts() if hasattr(info, "get_dicts") else info
        if not stages or "reduction" not in stages[-1]:
            return None
        return int(stages[-1]["reduction"])

    @property
    def patch_size(self) -> int:
        if not self.has_tokens:
            raise TypeError(f"backbone '{self.name}' has no patches")
        return int(self.model.patch_embed.patch_size[0])

    @property
    def grid_size(self) -> tuple[int, int]:
        if not self.has_tokens:
            raise TypeError(f"backbone '{self.name}' has no patch grid")
        return tuple(self.model.patch_embed.grid_size)
