"""Optimisers (SGD, AdamW, LARS) and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from pretrainlab.errors import PretrainlabError, unknown_name_message
from pretrainlab.train.lars import LARS

OPTIMIZERS = ("sgd", "adamw", "lars")


def parameter_groups(method: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and biases/norms/tokens without weight decay (nor LARS adaptation)."""
    decay, no_decay = [], []
    for name, parameter in method.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if method.excluded_from_weight_decay(name, parameter) else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(method: nn.Module, name: str, lr: float, weight_decay: float,
                    momentum: float, lars_trust: float = 0.001) -> torch.optim.Optimizer:
    groups = parameter_groups(method, weight_decay)
    if name == "sgd":
        for group in groups:
            group.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        for group in groups:
            group.pop("lars_exclude", None)
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, trust_coefficient=lars_trust)
    raise PretrainlabError(unknown_name_message("optimizer", name, OPTIMIZERS))


def learning_rate_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Linear warm-up from 0 to `base_lr` over `warmup_steps`, then cosine decay to `min_lr`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
