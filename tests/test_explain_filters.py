"""Filter-health metrics against hand-computed values on constructed filters; the --filters-every monitor."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from pretrainlab.explain.filters import (
    degenerate_share,
    filter_health,
    filter_monitor_record,
    orthogonality,
    summarise,
    variance_entropy,
)


def test_all_zero_filters_are_degenerate_and_have_no_variance() -> None:
    zeros = torch.zeros(4, 2, 3, 3)
    assert degenerate_share(zeros) == 1.0
    assert variance_entropy(zeros) == 0.0
    assert math.isnan(orthogonality(zeros))


def test_identical_filters_have_zero_entropy_and_zero_orthogonality() -> None:
    kernel = torch.arange(9.0).reshape(3, 3) - 4
    weight = kernel.expand(5, 1, 3, 3).clone()
    assert degenerate_share(weight) == 0.0
    assert variance_entropy(weight) == pytest.approx(0.0, abs=1e-9)  # no variance across kernels at all
    assert orthogonality(weight) == pytest.approx(0.0, abs=1e-9)
    scaled = weight * torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0]).view(5, 1, 1, 1)  # one pattern, any sign and scale
    assert orthogonality(scaled) == pytest.approx(0.0, abs=1e-9)
    assert variance_entropy(scaled) == pytest.approx(0.0, abs=1e-9)  # one principal component


def test_orthogonal_filters_and_a_hand_computed_mix() -> None:
    basis = torch.eye(9).reshape(9, 1, 3, 3)  # nine one-hot kernels: mutually orthogonal
    assert orthogonality(basis) == pytest.approx(1.0)
    # Centred, the nine one-hot kernels have eight equal principal components and a zero one: entropy log 8 / log 9.
    assert variance_entropy(basis) == pytest.approx(math.log(8) / math.log(9))
    weight = torch.zeros(3, 1, 3, 3)
    weight[0, 0, 0, 0] = 1.0
    weight[1, 0, 0, 0], weight[1, 0, 0, 1] = 1.0, 1.0  # cos(w0, w1) = 1/sqrt(2)
    weight[2, 0, 2, 2] = 0.005  # below 1 % of the layer's max: degenerate, left out of orthogonality
    assert degenerate_share(weight) == pytest.approx(1 / 3)
    assert orthogonality(weight) == pytest.approx(1 - 1 / math.sqrt(2))


def test_summary_is_kernel_weighted_and_monitor_record_is_json() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 1))
    with torch.no_grad():
        model[0].weight.zero_()
    health = filter_health(model)
    assert list(health) == ["0", "2"]  # the 1x1 convolution is not a 3x3 filter
    assert summarise(health)["filters_degenerate"] == pytest.approx(2 / (2 + 8))
    record = filter_monitor_record(model)
    assert set(record["filters_layers"]) == {"0", "2"}
    json.dumps(record)


def test_filters_every_logs_health_before_and_during_training(builtin_source, tmp_path) -> None:
    from pretrainlab.pipeline import build_run_config, pretrain
    from tests.protocol_data import small_source

    source = small_source(builtin_source, 10, 1)
    config = build_run_config("simclr", {"backbone": "tinycnn", "data": "builtin", "out": str(tmp_path / "run")},
                              {"epochs": 2, "batch_size": 50, "filters_every": 1, "warmup_epochs": 0}, {})
    pretrain(config, show_progress=False, source=source)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    health = [record for record in records if "filters_entropy" in record]
    assert [record["epoch"] for record in health] == [0, 1, 2]
    assert set(health[0]["filters_layers"]) == {"stages.0.0", "stages.1.0", "stages.2.0"}
    assert health[0]["filters_entropy"] != health[-1]["filters_entropy"]  # the filters changed
