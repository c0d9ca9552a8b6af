"""Losses compute in fp32 inside bf16 autocast (losses/full_precision.py): the same value as without autocast."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.losses import (
    BarlowTwinsLoss,
    InfoNCELoss,
    NegativeCosineSimilarity,
    NTXentLoss,
    SwAVLoss,
    VICRegLoss,
)
from pretrainlab.losses.full_precision import in_full_precision, upcast


def embeddings(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (64, 32) embeddings of nearly aligned views, where bf16 rounding of cosines near 1 shows most."""
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(64, 32, generator=generator)
    return z_a, z_a + 0.05 * torch.randn(64, 32, generator=generator)


LOSSES = {
    "barlow_twins": BarlowTwinsLoss(),
    "vicreg": VICRegLoss(),
    "ntxent": NTXentLoss(temperature=0.2),
    "infonce": InfoNCELoss(temperature=0.2),
    "cosine": NegativeCosineSimilarity(),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_under_bf16_autocast_equals_fp32(name: str) -> None:
    loss = LOSSES[name]
    z_a, z_b = embeddings(0)
    expected = loss(z_a, z_b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # a layer inside autocast hands the loss bf16 embeddings
        got = loss(z_a.bfloat16(), z_b.bfloat16())
    assert got.dtype == torch.float32
    rounding = loss(z_a.bfloat16().float(), z_b.bfloat16().float())  # the inputs' own rounding, nothing more
    assert torch.allclose(got, rounding, rtol=1e-5, atol=1e-6), (name, got.item(), rounding.item(), expected.item())


def test_barlow_twins_on_diagonal_term_is_not_rounded_to_bf16() -> None:
    # C_ii of nearly identical views sits within 0.004 of 1, below bf16's resolution there (1/128 .. 1/256)
    z_a, z_b = embeddings(1)
    loss = BarlowTwinsLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        on_diagonal = loss.terms(z_a.bfloat16(), z_b.bfloat16())["on_diagonal"]
    exact = loss.terms(z_a.bfloat16().float(), z_b.bfloat16().float())["on_diagonal"]
    assert 0 < exact.item() < 1
    assert on_diagonal.item() == pytest.approx(exact.item(), rel=1e-4)


def test_gradients_reach_bf16_inputs_in_their_dtype() -> None:
    z_a, z_b = (z.bfloat16().requires_grad_() for z in embeddings(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        NTXentLoss()(z_a, z_b).backward()
    assert z_a.grad is not None and z_a.grad.dtype == torch.bfloat16 and z_a.grad.abs().sum() > 0


def test_list_inputs_are_upcast_too() -> None:
    scores = [torch.randn(16, 8).bfloat16() for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = SwAVLoss()(scores, [])
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(SwAVLoss()([s.float() for s in scores], []).item(), rel=1e-5)


def test_outside_autocast_the_loss_is_untouched() -> None:
    @in_full_precision
    def dtype_seen(x: torch.Tensor) -> torch.dtype:
        return x.dtype

    assert dtype_seen(torch.zeros(2, dtype=torch.bfloat16)) == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dtype_seen(torch.zeros(2, dtype=torch.bfloat16)) == torch.float32
        assert dtype_seen(x=torch.zeros(2, dtype=torch.bfloat16)) == torch.float32


def test_upcast_leaves_integers_doubles_and_non_tensors() -> None:
    labels, double = torch.arange(3), torch.zeros(2, dtype=torch.float64)
    assert upcast(labels).dtype == torch.int64 and upcast(double).dtype == torch.float64
    assert upcast("text") == "text" and upcast(None) is None
    assert [t.dtype for t in upcast((torch.zeros(1).half(), labels))] == [torch.float32, torch.int64]


def test_every_loss_module_in_losses_runs_in_full_precision() -> None:
    # a loss added later without the decorator would silently compute in bf16 again
    import importlib
    import inspect
    import pkgutil

    import torch.nn as nn

    import pretrainlab.losses as losses

    undecorated = []
    for info in pkgutil.iter_modules(losses.__path__):
        module = importlib.import_module(f"pretrainlab.losses.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, nn.Module) or "forward" not in vars(cls):
                continue
            if not any(hasattr(vars(cls).get(entry), "__wrapped__") for entry in ("forward", "terms")):
                undecorated.append(f"{info.name}.{name}")
    assert undecorated == [], f"loss modules without @in_full_precision: {undecorated}"
