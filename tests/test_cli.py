"""The command line: listings, JSON evaluation, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pretrainlab.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_commands(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["list", "methods"], capsys)
    assert code == 0 and {"simclr", "rotnet", "mae"} <= set(out.split())
    code, out, _ = run_cli(["list", "backbones", "--filter", "resnet18"], capsys)
    assert "resnet18_cifar  (small-image)" in out and "resnet18" in out.split()
    code, out, _ = run_cli(["list", "datasets"], capsys)
    assert "builtin" in out and "npz:PATH" in out


@pytest.mark.parametrize("args, message", [
    (["pretrain", "--method", "simclrr"], "did you mean 'simclr'"),
    (["pretrain", "--method", "simclr", "--backbone", "resnt18"], "did you mean"),
    (["pretrain", "--method", "simclr", "--data", "folder:/no/such/folder"], "not found"),
    (["pretrain", "--method", "simclr", "--backbone", "tinycnn", "--batch-size", "99999"], "larger than the dataset"),
    (["pretrain", "--method", "simclr", "--backbone", "test_convnext", "--img-size", "16"], "cannot take"),
    (["pretrain", "--method", "mae", "--backbone", "tinycnn"], "vision transformer"),
    (["pretrain", "--method", "simclr", "--option", "temprature=0.1"], "did you mean 'temperature'"),
    (["pretrain", "--method", "simclr", "--precision", "fp8"], "precision"),
    (["pretrain", "--method", "simclr", "--resume", "--out", "/no/such/run"], "no config.yaml"),
    (["eval", "timm:resnt18", "--data", "builtin"], "did you mean"),
    (["eval", "timm:tinycnn", "--protocol", "knnn"], "did you mean 'knn'"),
    (["eval", "no/such/run"], "neither a run folder"),
])
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], message: str, capsys: pytest.CaptureFixture,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_eval_json_on_unlabeled_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "unlabeled.npz"
    np.savez(path, x_train=np.zeros((10, 8, 8), dtype=np.uint8))
    code, _, err = run_cli(["eval", "timm:tinycnn", "--data", f"npz:{path}"], capsys)
    assert code == 2 and "needs labels" in err


def test_eval_json_for_a_timm_backbone(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["eval", "timm:tinycnn", "--data", "builtin", "--protocol", "knn", "--json"], capsys)
    assert code == 0
    record = json.loads(out.strip().splitlines()[-1])
    assert record["protocol"] == "knn" and record["metric"] == "top1" and record["data"] == "builtin"
    assert 10 < record["value"] <= 100 and record["seconds"] > 0 and record["settings"]["k"] == 20


def test_pretrain_then_eval_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(["pretrain", "--method", "rotnet", "--backbone", "tinycnn", "--epochs", "1",
                            "--batch-size", "500", "--out", str(out), "--no-progress", "--option", "hidden_dim=16"],
                           capsys)
    assert code == 0, err
    code, out_text, _ = run_cli(["eval", str(out), "--protocol", "knn,linear", "--json"], capsys)
    records = [json.loads(line) for line in out_text.strip().splitlines()]
    assert code == 0 and [r["protocol"] for r in records] == ["knn", "linear"]


def test_max_train_pretrains_on_a_class_balanced_subset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    out = tmp_path / "run"
    code, _, err = run_cli(["pretrain", "--method", "rotnet", "--backbone", "tinycnn", "--epochs", "1",
                            "--batch-size", "100", "--max-train", "300", "--out", str(out), "--no-progress",
                            "--option", "hidden_dim=16"], capsys)
    assert code == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["max_train"] == 300 and saved["resolved"]["train_images"] == 300
    assert "train:300" in saved["resolved"]["split"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(record["step"] for record in metrics if "step" in record) == 3  # 300 images / 100 per step
    code, _, err = run_cli(["pretrain", "--method", "rotnet", "--max-train", "0", "--out", str(tmp_path / "x"),
                            "--no-progress"], capsys)
    assert code == 2 and "--max-train must be at least 1" in err
