"""Momentum (EMA) teachers, shared by MoCo, BYOL, DINO and every method with a slow-moving target network.

The teacher is a frozen copy of a student module, updated after every optimiser step as
teacher = m * teacher + (1 - m) * student, with m raised from `base` to 1 on a cosine schedule
(BYOL, arXiv 2006.07733, section 3.2; DINO, arXiv 2104.14294).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn


def momentum_at(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """Cosine increase of the momentum from `base` (step 0) to `final` (last step)."""
    progress = min(1.0, step / max(1, total_steps))
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off, the starting point of an EMA teacher."""
    teacher = copy.deepcopy(module)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, for parameters; buffers are copied."""
    teacher_parameters = list(teacher.parameters())
    student_parameters = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(teacher_parameters, momentum)
    torch._foreach_add_(teacher_parameters, student_parameters, alpha=1 - momentum)
    for teacher_buffer, student_buffer in zip(teacher.buffers(), student.buffers(), strict=True):
        teacher_buffer.copy_(student_buffer)
