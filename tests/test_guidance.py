"""Guidance: linear CKA against its feature-space definition, layer pairing, and alignment that actually moves."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.cli import main
from pretrainlab.config import build_config
from pretrainlab.losses.cka import linear_cka
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.methods.guidance import pair_layers


def naive_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Kornblith et al.'s feature-space form: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centred columns."""
    x, y = x - x.mean(0), y - y.mean(0)
    return (y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm())


def test_linear_cka_matches_its_definition_and_invariances() -> None:
    x, y = torch.randn(32, 10, dtype=torch.float64), torch.randn(32, 7, dtype=torch.float64)
    torch.testing.assert_close(linear_cka(x, y).double(), naive_cka(x, y), atol=1e-5, rtol=1e-4)
    rotation, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    torch.testing.assert_close(linear_cka(x @ rotation * 3.0 + 1.0, y), linear_cka(x, y), atol=1e-5, rtol=1e-4)
    assert float(linear_cka(x, x)) == pytest.approx(1.0, abs=1e-5)
    maps = torch.randn(32, 4, 3, 3)
    torch.testing.assert_close(linear_cka(maps, y), linear_cka(maps.flatten(1), y))


def test_layers_pair_by_relative_depth() -> None:
    assert pair_layers(4, 4) == [0, 1, 2, 3]
    assert pair_layers(3, 21) == [0, 10, 20]
    assert pair_layers(5, 3) == [0, 0, 1, 2, 2]  # round half to even
    assert pair_layers(1, 4) == [3]


def test_guidance_pulls_the_target_towards_the_guide(rgb_batch: torch.Tensor) -> None:
    backbone = create_backbone("test_fcn", 32, 3)
    context = MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=10,
                            dataset_size=16)
    config = build_config(METHODS.get("guidance").config_class, {"guide": "timm:test_plain_cnn", "weight": 10.0},
                          "guidance")
    method = METHODS.get("guidance")(backbone, config, context).train()
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    labels = torch.arange(16) % 10
    distances = []
    for _ in range(25):
        batch = method.prepare_batch(rgb_batch, labels, torch.Generator().manual_seed(0))  # the same views each step
        outputs = method(batch)
        distances.append(float(outputs["cka_distance"]))
        optimizer.zero_grad()
        outputs["loss"].backward()
        optimizer.step()
    assert distances[-1] < 0.7 * distances[0], distances
    assert all(not p.requires_grad for p in method.guide.parameters())


@pytest.mark.parametrize("options, message", [
    ([], "guidance needs a guide"),
    (["--option", "guide=timm:tinycnn", "--option", "base=guidance"], "cannot guide itself"),
    (["--option", "guide=timm:tinycnn", "--option", "weight=-1"], ">= 0"),
])
def test_bad_guidance_options_are_one_line(options: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["pretrain", "--method", "guidance", "--backbone", "tinycnn", "--max-train", "64", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
