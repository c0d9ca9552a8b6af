"""NT-Xent against a naive per-anchor loop written from the paper's equation (1)."""

from __future__ import annotations

import math

import pytest
import torch

from pretrainlab.losses import NTXentLoss


def naive_ntxent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> float:
    views = torch.cat([z_a, z_b])
    views = views / views.norm(dim=1, keepdim=True)
    n = z_a.shape[0]
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        numerator = math.exp(float(views[i] @ views[positive]) / temperature)
        denominator = sum(math.exp(float(views[i] @ views[k]) / temperature) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_ntxent_matches_naive_reference(temperature: float) -> None:
    generator = torch.Generator().manual_seed(3)
    z_a, z_b = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    expected = naive_ntxent(z_a.double(), z_b.double(), temperature)
    assert float(NTXentLoss(temperature)(z_a, z_b)) == pytest.approx(expected, rel=1e-5)


def test_ntxent_is_low_when_views_agree_and_high_when_not() -> None:
    z = torch.eye(8)
    aligned = float(NTXentLoss(0.1)(z, z))
    shuffled = float(NTXentLoss(0.1)(z, z.roll(1, dims=0)))
    assert aligned < 0.01 < shuffled


def test_ntxent_rejects_bad_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
