"""A run is its folder: resume trains the folder given, a finished run is never overwritten, and what a killed
run leaves behind (a torn metrics line, checkpoint temporaries) never blocks its resume."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pretrainlab.cli import main


def tiny_data(folder: Path) -> Path:
    path = folder / "tiny.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        np.savez(path, x_train=rng.integers(0, 256, (32, 16, 16), dtype=np.uint8))
    return path


def pretrain_args(data: Path, out: Path | str, *extra: str) -> list[str]:
    return ["pretrain", "--method", "simclr", "--backbone", "tinycnn", "--data", f"npz:{data}", "--out", str(out),
            "--epochs", "2", "--batch-size", "16", "--log-every", "1", "--no-progress", "--option", "hidden_dim=16",
            "--option", "projection_dim=8", *extra]


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def folder_hashes(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def stopped_run(tmp_path: Path, capsys: pytest.CaptureFixture, name: str = "orig") -> Path:
    out = tmp_path / name
    code, err = run(pretrain_args(tiny_data(tmp_path), out, "--stop-after", "1"), capsys)
    assert code == 130 and (out / "checkpoints" / "last.pt").is_file(), err
    return out


def test_resume_trains_the_folder_given_not_the_saved_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    original = stopped_run(tmp_path, capsys)
    fork = tmp_path / "fork"
    shutil.copytree(original, fork)
    before = folder_hashes(original)
    code, err = run(pretrain_args(tiny_data(tmp_path), fork, "--resume"), capsys)
    assert code == 0, err
    assert (fork / "backbone.safetensors").is_file()
    assert folder_hashes(original) == before, "the folder the run was copied from must stay untouched"


def test_resume_with_an_absolute_out_from_another_working_folder(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    data = tiny_data(tmp_path)
    monkeypatch.chdir(tmp_path / "a")
    code, err = run(pretrain_args(data, "runs/x", "--stop-after", "1"), capsys)
    assert code == 130, err
    monkeypatch.chdir(tmp_path / "b")
    code, err = run(pretrain_args(data, tmp_path / "a" / "runs" / "x", "--resume"), capsys)
    assert code == 0, err
    assert (tmp_path / "a" / "runs" / "x" / "backbone.safetensors").is_file()
    assert not (tmp_path / "b" / "runs").exists()


def test_a_finished_run_is_never_overwritten_even_without_checkpoints(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "done"
    assert run(pretrain_args(tiny_data(tmp_path), out), capsys)[0] == 0
    shutil.rmtree(out / "checkpoints")
    before = folder_hashes(out)
    code, err = run(pretrain_args(tiny_data(tmp_path), out, "--seed", "3"), capsys)
    assert code == 2 and "already holds a run" in err and "--resume" in err, err
    assert folder_hashes(out) == before


def test_an_empty_folder_or_one_with_stale_temporaries_starts_a_run(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "empty"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / ".last.pt.999999.tmp").write_bytes(b"half a checkpoint")
    code, err = run(pretrain_args(tiny_data(tmp_path), out), capsys)
    assert code == 0, err
    assert not (out / "checkpoints" / ".last.pt.999999.tmp").exists()


def test_stop_after_is_per_invocation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = stopped_run(tmp_path, capsys)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert "stop_after" not in saved["train"]
    code, err = run(pretrain_args(tiny_data(tmp_path), out, "--resume", "--stop-after", "2"), capsys)
    assert code == 130 and "stopped at step 2" in err, err
    code, err = run(pretrain_args(tiny_data(tmp_path), out, "--resume", "--stop-after", "0"), capsys)
    assert code == 0, err  # not refused as a settings change, and it does not stop again
    assert (out / "backbone.safetensors").is_file()


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = stopped_run(tmp_path, capsys)
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2, "epoch": 1.0, "lo')  # a kill in the middle of a write
    code, err = run(pretrain_args(tiny_data(tmp_path), out, "--resume"), capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2, 3, 4]


def test_stale_checkpoint_temporaries_are_removed_on_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = stopped_run(tmp_path, capsys)
    stale = [out / "checkpoints" / ".last.pt.424242.tmp", out / ".config.yaml.424243.tmp"]
    for path in stale:
        path.write_bytes(b"a write killed before its rename")
    code, err = run(pretrain_args(tiny_data(tmp_path), out, "--resume"), capsys)
    assert code == 0, err
    assert not any(path.exists() for path in stale)
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == ["last.pt"]
