"""The timm model interface the architectures in this folder share, written once.

timm models expose `num_features`, `forward_features`, `forward_head(x, pre_logits)`, `forward_intermediates`,
`get_classifier` and `reset_classifier`; every timm tool (and `Backbone`) relies on them. Two bases give them:
- `StagedNet`: stem -> stages -> final norm -> global pool -> classifier, for convolutional and hierarchical
  models whose stages output (B, C, H, W) maps (MOAT, RaftMLP, the complex CNN, ScatNet, ...).
- `token_grid`: turns a transformer's patch tokens (B, N, D) into a (B, D, h, w) map for intermediates.

Training-progress hook: an architecture whose training follows a schedule (SLAB's LayerNorm-to-BatchNorm
replacement, iLLaMA's bidirectional-to-causal soft mask) defines `set_training_progress(progress)` with the
fraction of training done in [0, 1]; pretrainlab's trainer calls it before every step (`drive_schedules`), and
a plain PyTorch loop can call it too. The schedule is a constructor option of the model, so it is saved with
the model's creation kwargs like `drop_path_rate`; evaluation mode always runs the deployed architecture.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d
from timm.models._features import feature_take_indices

# Keyword arguments timm's create_model passes to every entry point; our builders do not use them.
TIMM_FACTORY_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def drop_factory_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The entry point's kwargs without timm's factory-only ones; pretrained weights do not exist here."""
    if kwargs.get("pretrained"):
        raise ValueError("pretrainlab's architectures have no pretrained weights")
    return {k: v for k, v in kwargs.items() if k not in TIMM_FACTORY_KWARGS}


def check_divisible(img_size: int, stride: int, what: str) -> None:
    """Raises ValueError (turned into a one-line CLI error by create_backbone) for sizes the model cannot take."""
    if img_size % stride:
        raise ValueError(f"image size {img_size} is not divisible by the {what} ({stride}); "
                         f"use a multiple of {stride}, e.g. {max(stride, img_size // stride * stride)}")


def drop_path_rates(rate: float, count: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to `rate` over `count` blocks (plain floats: builds on meta)."""
    return [rate * index / max(count - 1, 1) for index in range(count)]


def drive_schedules(module: nn.Module, progress: float) -> None:
    """Calls `set_training_progress(progress)` on every sub-module that has it (student and momentum copies)."""
    for child in module.modules():
        hook = getattr(child, "set_training_progress", None)
        if callable(hook):
            hook(progress)


def token_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens (B, h * w, D) in row-major order -> (B, D, h, w)."""
    batch, _, width = tokens.shape
    return tokens.reshape(batch, grid[0], grid[1], width).permute(0, 3, 1, 2).contiguous()


class ClassifierMixin:
    """`global_pool`, dropout and `fc` after the features; `num_classes=0` gives pooled features (pre-logits)."""

    num_features: int
    num_classes: int
    drop_rate: float

    def init_classifier(self, num_features: int, num_classes: int, global_pool: str = "avg",
                        drop_rate: float = 0.0) -> None:
        self.num_features = self.head_hidden_size = num_features
        self.drop_rate = drop_rate
        self.reset_classifier(num_classes, global_pool)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C, H, W) -> (B, C) pooled, or (B, num_classes) logits."""
        x = self.global_pool(x)
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)


class StagedNet(ClassifierMixin, nn.Module):
    """stem -> stages -> norm -> pool -> fc. Subclasses set `stem`, `stages` (an nn.ModuleList whose members map
    (B, C_in, H, W) -> (B, C_i, H_i, W_i)), `norm` (default identity) and `feature_info`, then `init_classifier`."""

    def __init__(self) -> None:
        super().__init__()
        self.norm: nn.Module = nn.Identity()

    def stage_map(self, x: torch.Tensor) -> torch.Tensor:
        """A stage's internal output as a feature map; identity unless the stages carry another form."""
        return x

    def run_stages(self, x: torch.Tensor, count: int) -> list[torch.Tensor]:
        outputs = []
        x = self.stem(x)
        for stage in self.stages[:count]:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              **_: Any) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's intermediate-feature API: the output of the selected stages, each (B, C_i, H_i, W_i)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be NCHW for {type(self).__name__}, got {output_fmt}")
        take, last = feature_take_indices(len(self.stages), indices)
        count = last + 1 if (stop_early or intermediates_only) else len(self.stages)
        outputs = self.run_stages(x, count)
        final = len(self.stages) - 1  # the final norm has the last stage's width: it applies there only
        intermediates = [self.stage_map(self.norm(outputs[i]) if norm and i == final else outputs[i]) for i in take]
        if intermediates_only:
            return intermediates
        return self.stage_map(self.norm(outputs[-1])), intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, num_features, H / stride, W / stride)."""
        return self.stage_map(self.norm(self.run_stages(x, len(self.stages))[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
