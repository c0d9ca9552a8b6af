"""Representations before and after each projection-head layer: shapes, `RUN@head.N` evaluation, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.backbones.selected import HeadBackbone, NestedBackbone
from pretrainlab.cli import main
from pretrainlab.config import build_config
from pretrainlab.data.source import ImageSource
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.features import extract_features, normalisation
from pretrainlab.eval.representation import fine_tune_selector, load_run_method, parse_selector, split_spec
from pretrainlab.eval.target import load_target
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.pipeline import build_run_config, evaluate_backbone, pretrain


def tiny(name: str, **options: object):
    method_class = METHODS.get(name)
    backbone = create_backbone("tinycnn", 32, 3)
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, name)
    return method_class(backbone, config, MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3))


@pytest.mark.parametrize("name, widths", [("simclr", [64, 32]), ("simclrv2", [48, 48, 32])])
def test_representations_name_every_head_layer(name: str, widths: list[int]) -> None:
    method = tiny(name).eval()
    images = torch.rand(5, 3, 32, 32)
    named = method.representations(images)
    assert list(named) == ["backbone"] + [f"head.{index}" for index in range(len(widths))]
    assert named["backbone"].shape == (5, method.backbone.embed_dim)
    assert [named[f"head.{index}"].shape[1] for index in range(len(widths))] == widths
    with torch.no_grad():
        assert torch.allclose(named[f"head.{len(widths) - 1}"], method.projection(named["backbone"]), atol=1e-6)
        for index in range(len(widths)):  # the kept prefix of the head computes exactly that layer's output
            kept = HeadBackbone(method.backbone, method.projection.prefix(index), widths[index], f"head.{index}")
            assert torch.allclose(kept.pooled(images), named[f"head.{index}"], atol=1e-6)


def test_selectors_parse_and_bad_ones_explain_themselves() -> None:
    assert parse_selector("dim64").dim == 64 and parse_selector("dim64").depth == -1
    assert (parse_selector("layer2,dim16").depth, parse_selector("layer2,dim16").dim) == (2, 16)
    assert parse_selector("layer3").dim == -1
    assert parse_selector("head.1").name == "head.1" and not parse_selector("head.1").nested
    assert split_spec("runs/a@head.1") == ("runs/a", "head.1")
    assert split_spec("timm:resnet18") == ("timm:resnet18", None)
    for bad in ["dim0", "@x", "head 1"]:
        with pytest.raises(PretrainlabError):
            parse_selector(bad)


@pytest.fixture(scope="module")
def tiny_source(builtin_source) -> ImageSource:
    return ImageSource("builtin", builtin_source.train.subset(np.arange(0, 4000, 40)),
                       builtin_source.test.subset(np.arange(0, 1000, 20)), builtin_source.classes,
                       split_note=builtin_source.split_note)


@pytest.fixture(scope="module")
def simclrv2_run(tmp_path_factory, tiny_source: ImageSource) -> Path:
    """Two optimiser steps of SimCLRv2 on 100 builtin digits: a real run folder with a checkpoint."""
    out = tmp_path_factory.mktemp("runs") / "simclrv2"
    config = build_run_config("simclrv2", {"backbone": "tinycnn", "out": str(out)},
                              {"epochs": 1, "batch_size": 50, "warmup_epochs": 0, "knn_every": 0},
                              {"hidden_dim": 24, "projection_dim": 16})
    pretrain(config, show_progress=False, source=tiny_source)
    return out


def test_run_at_head_layer_evaluates_that_layer(simclrv2_run: Path, tiny_source: ImageSource) -> None:
    results = {selector: evaluate_backbone(f"{simclrv2_run}{selector}", "builtin", ["knn", "linear"], device="cpu",
                                           source=tiny_source) for selector in ["", "@backbone", "@head.1"]}
    assert results["@head.1"][0].backbone == f"{simclrv2_run}@head.1"
    for result in results["@head.1"]:
        assert 10.0 < result.value <= 100.0  # 10 classes: above chance after two steps is not asserted, only sane
    assert results["@backbone"][0].value == results[""][0].value

    target = load_target(f"{simclrv2_run}@head.1", 28, 1)
    assert isinstance(target.backbone, HeadBackbone) and target.backbone.embed_dim == 24
    mean, std = normalisation(target, tiny_source.train.images)
    features = extract_features(target, tiny_source.test.images[:8], mean, std, torch.device("cpu"))
    method = load_run_method(simclrv2_run)  # independent path: the whole rebuilt method
    images = (torch.from_numpy(tiny_source.test.images[:8]).permute(0, 3, 1, 2).float() / 255 - mean[:, None, None])
    with torch.no_grad():
        expected = method.representations(images / std[:, None, None])["head.1"]
    assert torch.allclose(features, expected, atol=1e-5)


def test_nested_dims_and_errors_on_a_run(simclrv2_run: Path) -> None:
    full = load_target(str(simclrv2_run), 28, 1).backbone.eval()
    nested = load_target(f"{simclrv2_run}@dim16", 28, 1).backbone.eval()
    assert isinstance(nested, NestedBackbone) and nested.embed_dim == 16
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(nested.pooled(images), full.pooled(images)[:, :16])
    with pytest.raises(PretrainlabError, match="backbone, head.0, head.1, head.2"):
        load_target(f"{simclrv2_run}@head.9", 28, 1)
    with pytest.raises(PretrainlabError, match="vision transformer"):
        load_target(f"{simclrv2_run}@layer2,dim16", 28, 1)
    with pytest.raises(PretrainlabError, match="needs a run folder"):
        load_target("timm:tinycnn@head.0", 28, 1)
    assert fine_tune_selector(simclrv2_run) == "head.0"


def test_cli_eval_and_export_of_a_head_layer(simclrv2_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["eval", f"{simclrv2_run}@head.0", "--data", "builtin", "--k", "5", "--json"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[0]
    assert '"backbone": "' + f"{simclrv2_run}@head.0" in line and '"protocol": "knn"' in line

    exported = tmp_path / "head0.safetensors"
    assert main(["export", str(simclrv2_run), "--layer", "head.0", "--out", str(exported)]) == 0
    from_file = load_target(str(exported), 28, 1).backbone.eval()
    from_run = load_target(f"{simclrv2_run}@head.0", 28, 1).backbone.eval()
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(from_file.pooled(images), from_run.pooled(images), atol=1e-6)
    assert main(["export", str(simclrv2_run), "--layer", "head.7", "--out", str(tmp_path / "x.safetensors")]) == 2
