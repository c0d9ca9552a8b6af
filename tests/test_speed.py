"""The speed protocol: well-formed records and exact parameter / MAC counts for a model counted by hand.

Timings are never asserted (DESIGN.md): only that they are positive and consistent with each other.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.eval import PROTOCOLS, EvalContext, EvalTarget
from pretrainlab.eval.protocols import skip_reason
from pretrainlab.eval.protocols.speed import count_macs, speed_settings

FAST = {"speed_batch_size": 4, "speed_warmup": 1, "speed_iterations": 2}


class OneConv(nn.Module):
    """One bias-free convolution and global average pooling, with timm's feature/head interface."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False)
        self.num_features = out_chans

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, out, H / stride, W / stride)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B, out)


def one_conv_context(in_chans: int, out_chans: int, stride: int, img_size: int, labelled: bool = True,
                     options: dict[str, Any] | None = None) -> EvalContext:
    model = OneConv(in_chans, out_chans, stride)
    backbone = Backbone(model, "one_conv", {"in_chans": in_chans, "img_size": img_size})
    images = np.zeros((8, img_size, img_size, in_chans), dtype=np.uint8)
    labels = np.arange(8) % 2 if labelled else None
    source = ImageSource("synthetic", ImageSet(images, labels), ImageSet(images, labels) if labelled else None)
    return EvalContext(EvalTarget(backbone, "one_conv", img_size), source, torch.device("cpu"),
                       {**FAST, **(options or {})})


@pytest.mark.parametrize(("in_chans", "out_chans", "stride", "img_size"), [(1, 4, 1, 8), (3, 8, 2, 8)])
def test_macs_and_parameters_match_a_hand_count(in_chans: int, out_chans: int, stride: int, img_size: int) -> None:
    context = one_conv_context(in_chans, out_chans, stride, img_size)
    out_size = math.ceil(img_size / stride)  # padding 1 keeps the size at stride 1, halves it at stride 2
    expected_macs = out_chans * out_size * out_size * in_chans * 3 * 3  # one multiply-add per kernel tap
    assert count_macs(context.target) == expected_macs
    results = {r.metric: r for r in PROTOCOLS.get("speed")(context)}
    assert results["params"].value == out_chans * in_chans * 3 * 3
    assert results["gmacs"].value * 1e9 == pytest.approx(expected_macs)


def test_speed_records_are_well_formed_and_leave_the_backbone_untouched() -> None:
    context = one_conv_context(1, 4, 1, 8)
    before = {k: v.clone() for k, v in context.target.backbone.state_dict().items()}
    results = PROTOCOLS.get("speed")(context)
    metrics = {r.metric: r for r in results}
    assert set(metrics) == {"infer_images_per_s", "infer_ms_per_batch", "train_images_per_s", "train_ms_per_batch",
                            "params", "gmacs"}
    for result in results:
        assert result.protocol == "speed" and result.data == "synthetic" and result.backbone == "one_conv"
        assert math.isfinite(result.value) and result.value > 0 and result.seconds > 0
        assert result.settings["batch_size"] == 4 and result.settings["img_size"] == 8
        assert result.settings["compile"] is False and result.settings["amp"] is False  # CPU defaults
    for phase in ("infer", "train"):
        # images/s and ms per batch are two views of one timing
        assert metrics[f"{phase}_images_per_s"].value * metrics[f"{phase}_ms_per_batch"].value / 1000 == \
            pytest.approx(4)
        assert metrics[f"{phase}_images_per_s"].higher_is_better
        assert not metrics[f"{phase}_ms_per_batch"].higher_is_better
    assert not metrics["params"].higher_is_better and not metrics["gmacs"].higher_is_better
    after = context.target.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the training step ran on a copy


def test_speed_settings_follow_the_device_and_the_options() -> None:
    cpu = speed_settings({}, torch.device("cpu"))
    assert (cpu.compile, cpu.amp, cpu.channels_last) == (False, False, False)
    chosen = speed_settings({"speed_batch_size": 7, "speed_channels_last": True, "speed_amp": True},
                            torch.device("cpu"))
    assert (chosen.batch_size, chosen.channels_last, chosen.amp) == (7, True, True)


def test_channels_last_and_bf16_run_on_cpu() -> None:
    context = one_conv_context(3, 8, 2, 8, options={"speed_channels_last": True, "speed_amp": True})
    results = {r.metric: r for r in PROTOCOLS.get("speed")(context)}
    assert results["train_images_per_s"].value > 0 and results["infer_images_per_s"].settings["amp"] is True


def test_speed_needs_no_labels() -> None:
    context = one_conv_context(1, 4, 1, 8, labelled=False)
    assert skip_reason("speed", context.source) is None
    assert "needs labels" in skip_reason("knn", context.source)
