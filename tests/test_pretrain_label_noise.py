"""Label noise in supervised pre-training: counts by hand, fixed by seed, what the loop trains on, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import pretrainlab.pipeline as pipeline
from pretrainlab.backbones import create_backbone
from pretrainlab.cli import main
from pretrainlab.config import build_config
from pretrainlab.data import load_source
from pretrainlab.methods import METHODS, MethodContext

LABELS = np.repeat(np.arange(4), [10, 20, 30, 41])  # per class: 10, 20, 30, 41 images


def supervised(name: str = "supervised", **options: object):  # noqa: ANN201
    method_class = METHODS.get(name)
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, name)
    context = MethodContext(img_size=16, in_chans=1, mean=(0.5,), std=(0.25,), num_classes=4)
    return method_class(create_backbone("tinycnn", 16, 1), config, context)


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_noisy_training_labels_flip_the_rate_of_every_class_fixed_by_seed(kind: str) -> None:
    method = supervised(label_noise=0.2, noise=kind)
    noisy, notes = method.training_labels(LABELS)
    wrong = noisy != LABELS
    # round-half-up of 20 % of 10, 20, 30, 41 images: 2, 4, 6, 8 (8.2)
    assert [int(wrong[np.equal(LABELS, c)].sum()) for c in range(4)] == [2, 4, 6, 8]
    assert notes["label_noise"] == {"rate": 0.2, "kind": kind, "seed": 0, "changed_labels": 20,
                                    "changed_share": 20 / 101}
    if kind == "asymmetric":
        assert np.array_equal(noisy[wrong], (LABELS[wrong] + 1) % 4)
    assert np.array_equal(method.training_labels(LABELS)[0], noisy)  # the same draw every time
    other_seed, _ = supervised(label_noise=0.2, noise=kind, noise_seed=1).training_labels(LABELS)
    assert not np.array_equal(other_seed, noisy)
    clean, clean_notes = supervised().training_labels(LABELS)
    assert clean is LABELS and clean_notes == {}


def test_compose_hands_a_members_noisy_labels_to_the_run() -> None:
    method = supervised("compose:supervised+simclr", supervised={"label_noise": 0.4, "noise": "asymmetric"})
    noisy, notes = method.training_labels(LABELS)
    assert int((noisy != LABELS).sum()) == 4 + 8 + 12 + 16 and notes["labels_from_member"] == "supervised"


def test_pretraining_trains_on_the_noisy_labels_and_records_them(tmp_path: Path, monkeypatch) -> None:
    seen = {}

    class Spy(pipeline.Trainer):
        def __init__(self, method, images, *args, **kwargs) -> None:  # noqa: ANN001
            seen["labels"] = images.labels
            super().__init__(method, images, *args, **kwargs)

    monkeypatch.setattr(pipeline, "Trainer", Spy)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 20)
    np.savez(tmp_path / "tiny.npz", x_train=rng.integers(0, 256, (40, 16, 16), dtype=np.uint8), y_train=labels)
    code = main(["pretrain", "--method", "supervised", "--backbone", "tinycnn", "--data", f"npz:{tmp_path}/tiny.npz",
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "16", "--no-progress",
                 "--option", "label_noise=0.25", "--option", "noise=asymmetric"])
    assert code == 0
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    recorded = config["resolved"]["label_noise"]
    changed = seen["labels"] != load_source(f"npz:{tmp_path}/tiny.npz").train.labels  # the clean split, reloaded
    assert recorded["changed_labels"] == int(changed.sum()) == 8  # 25 % of each class's 16 training images
    assert config["method_options"]["label_noise"] == 0.25 and recorded["kind"] == "asymmetric"


@pytest.mark.parametrize(("option", "message"), [("label_noise=1.0", "label_noise must be in [0, 1)"),
                                                  ("label_noise=-0.1", "label_noise must be in [0, 1)"),
                                                  ("noise=gaussian", "noise must be one of symmetric, asymmetric")])
def test_bad_noise_options_exit_2_in_one_line(option: str, message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "tiny.npz", x_train=np.zeros((8, 16, 16), dtype=np.uint8), y_train=np.arange(8) % 2)
    code = main(["pretrain", "--method", "supervised", "--backbone", "tinycnn", "--data", f"npz:{tmp_path}/tiny.npz",
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress", "--option", option])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error:") and message in error and "\n" not in error
    assert not (tmp_path / "run").exists()
