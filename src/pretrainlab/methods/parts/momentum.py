"""Momentum (EMA) teachers, shared by MoCo, BYOL, DINO, PixPro and every method with a slow-moving target network.

The teacher is a frozen copy of named student modules, updated after every optimiser step as
teacher = m * teacher + (1 - m) * student, with m raised from `base` to `final` on a cosine schedule
(BYOL, arXiv 2006.07733, section 3.2; DINO, arXiv 2104.14294). Only parameters follow the student: the
teacher's buffers (batch-norm running statistics) are its own, accumulated by its own forward passes (the teacher
runs in training mode, so they never enter its outputs during pre-training), as in the official BYOL, MoCo
and DINO code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

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
    """teacher <- momentum * teacher + (1 - momentum) * student, for parameters only.

    The teacher's buffers (batch-norm running statistics) stay its own, accumulated by its own forward
    passes, as in the official BYOL, MoCo and DINO code, which average parameters only.
    """
    teacher_parameters = list(teacher.parameters())
    student_parameters = [p.detach() for p in student.parameters()]
    if len(teacher_parameters) != len(student_parameters):
        raise ValueError(f"teacher has {len(teacher_parameters)} parameters, student {len(student_parameters)}")
    torch._foreach_mul_(teacher_parameters, momentum)
    torch._foreach_add_(teacher_parameters, student_parameters, alpha=1 - momentum)


class MomentumTeacher(nn.ModuleDict):
    """Frozen EMA copies of named student modules, with their momentum schedule.

    A `ModuleDict` so the teacher's parts are reached by name (`teacher["backbone"]`) and saved in checkpoints
    under `<attribute>.<name>.*`. The method calls `follow` from `on_step_end` with the same names.

    Args:
        student: name -> module the teacher starts as a copy of.
        base: momentum at step 0.
        final: momentum at the last step (1: the cosine schedule of BYOL and DINO; `base`: constant, as MoCo).
    """

    def __init__(self, student: Mapping[str, nn.Module], base: float, final: float = 1.0) -> None:
        super().__init__({name: frozen_copy(module) for name, module in student.items()})
        if not 0 <= base <= final <= 1:
            raise ValueError(f"need 0 <= base momentum <= final momentum <= 1, got {base}, {final}")
        self.base, self.final = base, final
        self.momentum = base  # the value of the last update, for logging

    def follow(self, student: Mapping[str, nn.Module], step: int, total_steps: int) -> float:
        """One EMA step toward `student` (the same names) at the scheduled momentum of `step`; returns it."""
        if set(student) != set(self.keys()):
            raise ValueError(f"the student's parts {sorted(student)} differ from the teacher's {sorted(self.keys())}")
        self.momentum = momentum_at(step, total_steps, self.base, self.final)
        for name, module in student.items():
            ema_update(self[name], module, self.momentum)
        return self.momentum
