"""The training loop: interrupted runs resume to identical weights, divergence stops cleanly, runs are folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError
from pretrainlab.pipeline import build_run_config, pretrain, resume_config
from pretrainlab.train.loop import TrainingDiverged, TrainingInterrupted


@pytest.fixture(scope="module")
def small_source(builtin_source) -> ImageSource:
    """128 training digits, enough for a few steps."""
    keep = np.arange(0, 4000, 31)[:128]
    return ImageSource("builtin", builtin_source.train.subset(keep), builtin_source.test.subset(np.arange(0, 1000, 10)),
                       builtin_source.classes, split_note=builtin_source.split_note)


def config_for(out: Path, **train: object):
    defaults = {"epochs": 2, "batch_size": 32, "warmup_epochs": 1, "log_every": 2, "checkpoint_every": 3}
    return build_run_config("simclr", {"backbone": "tinycnn", "out": str(out)}, {**defaults, **train},
                            {"hidden_dim": 32, "projection_dim": 16})


def test_run_folder_contents(tmp_path: Path, small_source: ImageSource) -> None:
    summary = pretrain(config_for(tmp_path / "run", knn_every=1), show_progress=False, source=small_source)
    run = tmp_path / "run"
    assert summary["steps"] == 8
    for name in ("config.yaml", "metrics.jsonl", "backbone.safetensors", "checkpoints/last.pt"):
        assert (run / name).exists(), name
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["method"] == "simclr" and config["resolved"]["img_size"] == 28 and config["train"]["epochs"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("knn_top1" in r for r in records) and any("images_per_second" in r for r in records)
    assert [r["epoch"] for r in records if "knn_top1" in r] == [0, 1, 2]  # epoch 0: the untrained init
    assert config["resolved"]["warmup_epochs"] == 1 and config["resolved"]["lr"] == pytest.approx(0.6 * 32 / 256)


def test_interrupted_run_resumes_to_identical_weights(tmp_path: Path, small_source: ImageSource) -> None:
    pretrain(config_for(tmp_path / "straight"), show_progress=False, source=small_source)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        pretrain(config_for(tmp_path / "split", stop_after=5), show_progress=False, source=small_source)
    assert not (tmp_path / "split" / "backbone.safetensors").exists()
    saved = resume_config(tmp_path / "split", {}, {}, {})
    assert saved.train.stop_after == 0, "stop_after is per invocation, never saved"
    pretrain(saved, resume=True, show_progress=False, source=small_source)
    straight = load_file(tmp_path / "straight" / "backbone.safetensors")
    resumed = load_file(tmp_path / "split" / "backbone.safetensors")
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "metrics after the checkpoint are rewritten, not duplicated"


def test_resume_refuses_changed_settings(tmp_path: Path, small_source: ImageSource) -> None:
    with pytest.raises(TrainingInterrupted):
        pretrain(config_for(tmp_path / "run", stop_after=2), show_progress=False, source=small_source)
    with pytest.raises(PretrainlabError, match="cannot change"):
        resume_config(tmp_path / "run", {"backbone": "resnet18_cifar"}, {}, {})
    with pytest.raises(PretrainlabError, match="already holds a run"):
        pretrain(config_for(tmp_path / "run"), show_progress=False, source=small_source)


def test_divergence_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path: Path,
                                                                       small_source: ImageSource) -> None:
    config = config_for(tmp_path / "run", lr=1e30, lr_scaling="none", warmup_epochs=0, checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match="lower --lr") as error:
        pretrain(config, show_progress=False, source=small_source)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] >= 1
    for value in checkpoint["method"].values():
        assert torch.isfinite(value.float()).all(), "the kept checkpoint must predate the divergence"
    assert "step" in str(error.value)


@pytest.mark.parametrize("optimizer", ["adamw", "lars"])
def test_other_optimizers_and_accumulation_train(tmp_path: Path, small_source: ImageSource, optimizer: str) -> None:
    config = config_for(tmp_path / optimizer, optimizer=optimizer, accumulate=2, grad_clip=1.0, epochs=1,
                        precision="bf16")
    summary = pretrain(config, show_progress=False, source=small_source)
    assert np.isfinite(summary["final_loss"])


def test_unlabeled_source_trains(tmp_path: Path, small_source: ImageSource) -> None:
    unlabeled = ImageSource("x", ImageSet(small_source.train.images))
    summary = pretrain(config_for(tmp_path / "run", epochs=1), show_progress=False, source=unlabeled)
    assert summary["steps"] == 4
