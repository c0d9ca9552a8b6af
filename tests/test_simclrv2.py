"""SimCLRv2: the 3-layer batch-normalised head, its loss against a loop-based NT-Xent, its settings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.methods.simclrv2 import SimCLRv2, SimCLRv2Config


def make_method(**options: object) -> SimCLRv2:
    backbone = create_backbone("tinycnn", 32, 3)
    config = build_config(SimCLRv2Config, dict(options), "simclrv2")
    context = MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    return SimCLRv2(backbone, config, context)


def naive_ntxent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> float:
    """SimCLR's loss written as the paper's sum over the 2N anchors, one exp at a time."""
    z = torch.cat([z_a, z_b]).double()
    z = z / z.norm(dim=1, keepdim=True)
    count = z.shape[0]
    half = count // 2
    total = 0.0
    for anchor in range(count):
        positive = (anchor + half) % count
        numerator = math.exp(float(z[anchor] @ z[positive]) / temperature)
        others = [other for other in range(count) if other != anchor]
        denominator = sum(math.exp(float(z[anchor] @ z[other]) / temperature) for other in others)
        total += -math.log(numerator / denominator)
    return total / count


def test_head_is_three_batch_normalised_layers_of_backbone_width() -> None:
    method = make_method()
    linears = [layer for layer in method.projection.layers if isinstance(layer, nn.Linear)]
    norms = [layer for layer in method.projection.layers if isinstance(layer, nn.BatchNorm1d)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(128, 128), (128, 128), (128, 128)]
    assert len(norms) == 3 and norms[-1].affine is False and norms[0].affine is True
    assert all(layer.bias is None for layer in linears)  # BatchNorm follows every Linear
    assert METHODS.get("simclrv2") is SimCLRv2


def test_loss_matches_loop_reference_on_the_head_output(rgb_batch: torch.Tensor) -> None:
    method = make_method(hidden_dim=24, projection_dim=8, temperature=0.2)
    method.train()
    batch = method.prepare_batch(rgb_batch, None, torch.Generator().manual_seed(3))
    loss = method(batch)["loss"].detach()
    view_a, view_b = batch.views["global"]
    with torch.no_grad():
        z = method.projection(method.backbone.pooled(torch.cat([view_a.images, view_b.images])))
    z_a, z_b = z.chunk(2)
    assert float(loss) == pytest.approx(naive_ntxent(z_a, z_b, 0.2), rel=1e-4)


def test_fine_tune_representation_is_the_first_head_layer() -> None:
    method = make_method()
    assert method.fine_tune_representation == "head.0"
    method.eval()
    named = method.representations(torch.rand(4, 3, 32, 32))
    assert list(named) == ["backbone", "head.0", "head.1", "head.2"]
    assert named["head.0"].shape == (4, 128) and named["head.2"].shape == (4, 128)
    assert bool((named["head.0"] >= 0).all())  # after the first layer's ReLU


@pytest.mark.parametrize("options, message", [
    ({"projection_layers": 1}, "projection_layers"),
    ({"fine_tune_from": "head.5"}, "fine_tune_from"),
    ({"temperature": 0.0}, "temperature"),
])
def test_bad_settings_raise_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises((PretrainlabError, ValueError), match=message):
        make_method(**options)
