"""DINO's and SwAV's local views are turned off where they are narrower than a CNN's output stride (issue 9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pretrainlab.backbones import create_backbone
from pretrainlab.methods.base import MethodContext
from pretrainlab.pipeline import build_method, build_run_config, pretrain

SMALL_HEADS = {"dino": {"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8},
               "swav": {"hidden_dim": 16, "projection_dim": 8, "prototypes": 10}}
COUNT_OPTION = {"dino": "local_count", "swav": "local_views"}


def built(method: str, backbone: str, img_size: int, options: dict | None = None):
    config = build_run_config(method, {"backbone": backbone, "img_size": img_size}, {},
                              {**SMALL_HEADS[method], **(options or {})})
    context = MethodContext(img_size=img_size, in_chans=1, mean=(0.5,), std=(0.25,), dataset_size=64)
    return build_method(config, context)


@pytest.mark.parametrize("name, stride", [("resnet18", 32), ("resnet18_cifar", 8), ("tinycnn", 4),
                                          ("vit_nano_patch4", 4)])
def test_the_output_stride_is_the_last_stages_reduction(name: str, stride: int) -> None:
    assert create_backbone(name, img_size=32, in_chans=1).output_stride == stride


@pytest.mark.parametrize("method", ["dino", "swav"])
def test_a_stride_32_resnet_at_28_px_gets_no_local_views_and_says_why(method: str) -> None:
    model, adapted = built(method, "resnet18", 28)
    option = COUNT_OPTION[method]
    assert getattr(model.config, option) == 0 and "local" not in model.view_specs()
    assert adapted == {option: 0, "reason": "12-px local views are narrower than resnet18's output stride of 32 px"}


@pytest.mark.parametrize("method", ["dino", "swav"])
@pytest.mark.parametrize("backbone, img_size", [("tinycnn", 28), ("resnet18_cifar", 28), ("resnet18", 96)])
def test_local_views_stay_where_they_cover_a_cell_of_the_last_stage(method: str, backbone: str,
                                                                  img_size: int) -> None:
    model, adapted = built(method, backbone, img_size)
    assert getattr(model.config, COUNT_OPTION[method]) > 0 and "local" in model.view_specs()
    assert COUNT_OPTION[method] not in adapted  # 96 px: 41-px local views, over one 32-px cell


@pytest.mark.parametrize("method", ["dino", "swav"])
def test_a_given_number_of_local_views_stands(method: str) -> None:
    option = COUNT_OPTION[method]
    model, adapted = built(method, "resnet18", 28, {option: 2})
    assert getattr(model.config, option) == 2 and "local" in model.view_specs()
    assert adapted == {}


def test_a_dino_run_records_the_local_views_it_turned_off(tmp_path: Path, builtin_source) -> None:
    source = builtin_source.__class__("builtin", builtin_source.train.subset(np.arange(32)), None,
                                      builtin_source.classes)
    config = build_run_config("dino", {"backbone": "resnet18", "out": str(tmp_path / "run"), "img_size": 28},
                              {"epochs": 1, "batch_size": 16}, SMALL_HEADS["dino"])
    pretrain(config, show_progress=False, source=source)
    adapted = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["resolved"]["adapted_options"]
    assert adapted["local_count"] == 0
    assert "narrower than resnet18's output stride of 32 px" in adapted["reason"]
