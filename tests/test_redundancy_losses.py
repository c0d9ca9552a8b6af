"""Barlow Twins and VICReg losses against naive loop implementations, their methods, and bad settings."""

from __future__ import annotations

import math

import pytest
import torch

from pretrainlab.config import build_config
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses import BarlowTwinsLoss, VICRegLoss
from pretrainlab.methods.barlowtwins import BarlowTwinsConfig
from pretrainlab.methods.vicreg import VICRegConfig


def _columns(z: torch.Tensor) -> list[list[float]]:
    return [[float(z[b, d]) for b in range(z.shape[0])] for d in range(z.shape[1])]


def naive_barlow_twins(z_a: torch.Tensor, z_b: torch.Tensor, weight: float, eps: float = 1e-5) -> float:
    """The paper's equation with explicit loops: batch-normalise each dimension, correlate, sum the terms."""

    def standardise(column: list[float]) -> list[float]:
        mean = sum(column) / len(column)
        variance = sum((v - mean) ** 2 for v in column) / len(column)
        return [(v - mean) / math.sqrt(variance + eps) for v in column]

    a = [standardise(column) for column in _columns(z_a)]
    b = [standardise(column) for column in _columns(z_b)]
    batch, dims = z_a.shape
    on_diagonal = off_diagonal = 0.0
    for i in range(dims):
        for j in range(dims):
            correlation = sum(a[i][n] * b[j][n] for n in range(batch)) / batch
            if i == j:
                on_diagonal += (1 - correlation) ** 2
            else:
                off_diagonal += correlation**2
    return on_diagonal + weight * off_diagonal


def naive_vicreg_terms(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-4) -> tuple[float, float, float]:
    batch, dims = z_a.shape
    invariance = sum(float(z_a[n, d] - z_b[n, d]) ** 2 for n in range(batch) for d in range(dims)) / (batch * dims)

    def variance(z: torch.Tensor) -> float:
        hinge = 0.0
        for column in _columns(z):
            mean = sum(column) / batch
            std = math.sqrt(sum((v - mean) ** 2 for v in column) / (batch - 1) + eps)
            hinge += max(0.0, 1.0 - std)
        return hinge / dims

    def covariance(z: torch.Tensor) -> float:
        columns = _columns(z)
        means = [sum(column) / batch for column in columns]
        total = 0.0
        for i in range(dims):
            for j in range(dims):
                if i != j:
                    value = sum((columns[i][n] - means[i]) * (columns[j][n] - means[j]) for n in range(batch))
                    total += (value / (batch - 1)) ** 2
        return total / dims

    return invariance, (variance(z_a) + variance(z_b)) / 2, covariance(z_a) + covariance(z_b)


@pytest.fixture()
def embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    z_a = torch.randn(10, 6, generator=generator, dtype=torch.float64)
    z_b = 0.7 * z_a + 0.5 * torch.randn(10, 6, generator=generator, dtype=torch.float64)
    return z_a, z_b


@pytest.mark.parametrize("weight", [0.0051, 0.5])
def test_barlow_twins_matches_loops(embeddings: tuple[torch.Tensor, torch.Tensor], weight: float) -> None:
    z_a, z_b = embeddings
    loss = BarlowTwinsLoss(off_diagonal_weight=weight)(z_a, z_b)
    assert float(loss) == pytest.approx(naive_barlow_twins(z_a, z_b, weight), rel=1e-5)


def test_barlow_twins_scale_and_terms(embeddings: tuple[torch.Tensor, torch.Tensor]) -> None:
    z_a, z_b = embeddings
    criterion = BarlowTwinsLoss(0.1, scale=0.25)
    terms = criterion.terms(z_a, z_b)
    assert float(criterion(z_a, z_b)) == pytest.approx(0.25 * float(terms["on_diagonal"] + 0.1 * terms["off_diagonal"]))


def test_barlow_twins_is_near_zero_for_identical_decorrelated_views() -> None:
    # Orthonormal columns spanned by centred data are centred too: their cross-correlation is the identity.
    data = torch.randn(64, 8, dtype=torch.float64)
    decorrelated, _ = torch.linalg.qr(data - data.mean(dim=0))
    assert float(BarlowTwinsLoss()(decorrelated, decorrelated)) < 1e-4
    assert float(BarlowTwinsLoss()(decorrelated, decorrelated.flip(1))) > 1.0


def test_vicreg_matches_loops(embeddings: tuple[torch.Tensor, torch.Tensor]) -> None:
    z_a, z_b = embeddings
    criterion = VICRegLoss()
    terms = criterion.terms(z_a, z_b)
    invariance, variance, covariance = naive_vicreg_terms(z_a, z_b)
    assert float(terms["invariance"]) == pytest.approx(invariance, rel=1e-5)
    assert float(terms["variance"]) == pytest.approx(variance, rel=1e-5)
    assert float(terms["covariance"]) == pytest.approx(covariance, rel=1e-5)
    expected = 25 * invariance + 25 * variance + covariance
    assert float(criterion(z_a, z_b)) == pytest.approx(expected, rel=1e-5)


def test_vicreg_variance_term_punishes_collapse() -> None:
    collapsed = torch.ones(8, 4) + 1e-3 * torch.randn(8, 4)
    spread = 3 * torch.randn(8, 4)
    criterion = VICRegLoss()
    assert float(criterion.terms(collapsed, collapsed)["variance"]) > 0.9
    assert float(criterion.terms(spread, spread)["variance"]) < 0.2


@pytest.mark.parametrize("loss_class", [BarlowTwinsLoss, VICRegLoss])
def test_gradients_flow_to_both_views(loss_class: type, embeddings: tuple[torch.Tensor, torch.Tensor]) -> None:
    z_a, z_b = (z.clone().requires_grad_(True) for z in embeddings)
    loss_class()(z_a, z_b).backward()
    assert z_a.grad.abs().sum() > 0 and z_b.grad.abs().sum() > 0


def test_bad_hyperparameters_raise() -> None:
    with pytest.raises(ValueError, match="lambda"):
        BarlowTwinsLoss(off_diagonal_weight=-1)
    with pytest.raises(ValueError, match="scale"):
        BarlowTwinsLoss(scale=0)
    with pytest.raises(ValueError, match="variance_weight"):
        VICRegLoss(variance_weight=-1)
    with pytest.raises(ValueError, match="2 images"):
        VICRegLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        BarlowTwinsLoss()(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(PretrainlabError, match="covariance_weight"):
        build_config(VICRegConfig, {"covariance_weight": -2.0}, "vicreg")
    with pytest.raises(PretrainlabError, match="projection_dim"):
        build_config(BarlowTwinsConfig, {"projection_dim": 0}, "barlowtwins")
