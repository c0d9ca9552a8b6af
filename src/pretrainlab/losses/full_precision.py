"""Losses run in fp32 even inside bf16 / fp16 autocast.

Autocast casts every matmul's inputs down, so `z.float() @ z.float().T` inside a loss still comes out in bf16:
a cosine near 1 then has a resolution of 1/128, Barlow Twins' 1 - C_ii cannot fall below about 0.004 and its
gradient stops there, and a contrastive logit of 5 (tau 0.2) is rounded by 0.03. The network's layers gain speed
from low precision; a loss of a few (B, D) x (D, B) products gains nothing, so it runs with autocast switched off
and its floating-point inputs in fp32, the values an fp32 run computes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

Function = TypeVar("Function", bound=Callable[..., Any])


def upcast(value: Any) -> Any:
    """Floating-point tensors (also inside lists and tuples) to fp32; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float64 else value
    if type(value) in (list, tuple):  # not named tuples: their constructors take fields, not one iterable
        return type(value)(upcast(item) for item in value)
    return value


def first_tensor(values: tuple[Any, ...]) -> torch.Tensor | None:
    """The first tensor among `values` (searching lists and tuples): its device decides which autocast is on."""
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (list, tuple)) and (found := first_tensor(tuple(value))) is not None:
            return found
    return None


def in_full_precision(function: Function) -> Function:
    """Decorates a loss (a function, or a module's `forward` / `terms`): under autocast on the inputs' device it
    runs with autocast off and its floating-point tensor arguments in fp32; outside autocast it is untouched."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        tensor = first_tensor((*args, *kwargs.values()))
        device_type = tensor.device.type if tensor is not None else "cpu"
        if not torch.is_autocast_enabled(device_type):
            return function(*args, **kwargs)
        with torch.autocast(device_type, enabled=False):
            return function(*upcast(args), **{key: upcast(value) for key, value in kwargs.items()})

    return run  # type: ignore[return-value]
