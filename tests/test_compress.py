"""PELA low-rank compression: SVD factors, the registered low-rank model, and `pretrainlab compress` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file

from pretrainlab.backbones import create_backbone
from pretrainlab.backbones.lowrank import LowRankConv2d, LowRankLinear, factorise_, init_from_full, low_rank_layers
from pretrainlab.cli import main


def test_factors_are_the_truncated_svd_and_keep_the_share_of_parameters() -> None:
    def network() -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 48, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(48, 96))

    full, low = network(), network()
    assert factorise_(low, 0.5) == ["1", "4"]  # the first layer reads the image and stays full rank
    assert isinstance(low[1], LowRankConv2d) and isinstance(low[4], LowRankLinear)
    init_from_full(low, full)
    for index in (1, 4):
        weight = full[index].weight.detach().flatten(1)
        rank = low[index][0].weight.shape[0]
        singular = torch.linalg.svdvals(weight)
        error = torch.linalg.matrix_norm(low[index].product().detach() - weight)
        torch.testing.assert_close(error, singular[rank:].square().sum().sqrt(), atol=1e-4, rtol=1e-4)  # Eckart-Young
        kept = sum(p.numel() for p in low[index].parameters() if p.ndim > 1) / weight.numel()
        assert 0.4 < kept <= 0.5
    x = torch.randn(2, 3, 10, 10)
    assert low(x).shape == full(x).shape


def test_low_rank_model_is_a_registered_timm_model(tmp_path: Path) -> None:
    from pretrainlab.backbones import save_backbone
    from pretrainlab.backbones.lowrank import low_rank_backbone

    backbone = low_rank_backbone(create_backbone("test_slab", 32, 1), 0.5).eval()
    assert low_rank_layers(backbone.model) and backbone.has_tokens
    save_backbone(backbone, tmp_path / "b.safetensors")
    with safe_open(str(tmp_path / "b.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    plain = timm.create_model(metadata["timm_name"], **json.loads(metadata["create_kwargs"]))
    plain.load_state_dict(load_file(str(tmp_path / "b.safetensors")))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), backbone.model(x))


def test_compress_a_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    teacher = tmp_path / "teacher"
    assert main(["pretrain", "--method", "simclr", "--backbone", "test_resnet_ibn_a", "--img-size", "32",
                 "--max-train", "64", "--epochs", "1", "--batch-size", "32", "--warmup-epochs", "0",
                 "--option", "hidden_dim=32", "--out", str(teacher), "--no-progress"]) == 0
    out = tmp_path / "small"
    assert main(["compress", str(teacher), "--rank-ratio", "0.5", "--out", str(out), "--epochs", "2",
                 "--batch-size", "32", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "compression.json").read_text())
    assert record["parameters_after"] < 0.75 * record["parameters_before"] and record["factorised_layers"] > 0
    assert "layers factorised" in printed
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert metrics and all(m["perturbation"] >= 0 for m in metrics)
    with safe_open(str(out / "backbone.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    kwargs = json.loads(metadata["create_kwargs"])
    assert metadata["timm_name"] == "pela_lowrank" and kwargs["base"] == "test_resnet_ibn_a"
    model = timm.create_model("pela_lowrank", **kwargs)
    model.load_state_dict(load_file(str(out / "backbone.safetensors")))


@pytest.mark.parametrize("ratio", ["0", "1.5", "-0.1"])
def test_rank_ratio_outside_the_unit_interval_is_refused(ratio: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert main(["compress", str(tmp_path), "--rank-ratio", ratio]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rank ratio must be in (0, 1]" in err
