"""bench/methods_table.py at another budget: rows keyed by epochs and seed, skipped when done or being measured
elsewhere, resumed when killed, and rendered as mean (seeds) beside the table's own row."""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import methods_table  # noqa: E402
from bench.methods_budget import budget_table, render_budgets  # noqa: E402


def test_row_keys_keep_the_tables_budget_apart_from_longer_budgets_and_other_seeds() -> None:
    assert methods_table.row_key("simclr") == "simclr"
    assert methods_table.row_key("mocov2", "no-shuffle-bn") == "mocov2-no-shuffle-bn"
    assert methods_table.row_key("simclr", epochs=50, seed=0) == "epochs50/simclr-seed0"
    assert methods_table.row_key("compose:mae+simclr", epochs=10, seed=1) == "epochs10/compose-mae-simclr-seed1"


def write(path: Path, **row: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"backbone": "tinycnn", **row}))


def test_budget_table_shows_the_mean_of_the_seeds_both_values_and_ranks_at_both_budgets(tmp_path: Path) -> None:
    write(tmp_path / "simclr.json", knn_top1=78.0, linear_top1=83.0)
    write(tmp_path / "rotnet.json", knn_top1=80.0, linear_top1=85.0)
    write(tmp_path / "epochs50" / "simclr-seed0.json", knn_top1=82.0, linear_top1=86.0)
    write(tmp_path / "epochs50" / "simclr-seed1.json", knn_top1=81.0, linear_top1=85.0)
    write(tmp_path / "epochs50" / "rotnet-seed0.json", knn_top1=80.5, linear_top1=85.5)
    lines = budget_table(tmp_path, 50, 10)
    simclr = next(line for line in lines if line.startswith("| simclr "))
    rotnet = next(line for line in lines if line.startswith("| rotnet "))
    # mean of 82 and 81 is 81.5; SimCLR was 2nd at 10 epochs (78 < 80) and is 1st at 50 (81.5 > 80.5)
    assert "| 78.00 | 81.50 (82.00, 81.00) | 83.00 | 85.50 (86.00, 85.00) | 2 -> 1 | - |" in simclr
    assert "| 80.00 | 80.50 (80.50) | 85.00 | 85.50 (85.50) | 1 -> 2 | 1 |" in rotnet
    assert any(line.startswith("3 of the rows above have finished") for line in lines)
    table = tmp_path / "methods.md"
    table.write_text("# Methods\n\n<!-- table -->\n<!-- /table -->\n\ntext after\n")
    render_budgets(tmp_path, table, 10)
    render_budgets(tmp_path, table, 10)  # a second render replaces the first
    text = table.read_text()
    assert text.count("### 50 epochs (5x)") == 1 and text.count("| simclr ") == 1 and "text after" in text


@pytest.fixture
def tiny_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=rng.integers(0, 255, (96, 16, 16, 1), dtype=np.uint8), y_train=np.arange(96) % 4,
             x_test=rng.integers(0, 255, (32, 16, 16, 1), dtype=np.uint8), y_test=np.arange(32) % 4)
    for name, value in {"DATA": data, "ROOT": tmp_path, "RESULTS": tmp_path / "results", "TRAIN_IMAGES": 64,
                        "BATCH_SIZE": 32, "TABLE": tmp_path / "methods.md"}.items():
        monkeypatch.setattr(methods_table, name, value)
    return tmp_path


def run(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["methods_table.py", *args])
    methods_table.main()


def test_a_longer_budget_row_is_written_apart_skipped_when_done_and_resumed_from_its_checkpoint(
        tiny_bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    args = ("--methods", "rotnet", "--epochs", "2", "--seed", "1", "--reuse", "--skip-done")
    run(monkeypatch, *args)
    row_file = tiny_bench / "results" / "epochs2" / "rotnet-seed1.json"
    run_dir = tiny_bench / "runs" / "bench-methods" / "epochs2" / "rotnet-seed1"
    row = json.loads(row_file.read_text())
    assert (row["epochs"], row["seed"]) == (2, 1) and not (tiny_bench / "results" / "rotnet.json").exists()
    assert (run_dir / "backbone.safetensors").exists()
    measured = row_file.read_text()
    run(monkeypatch, *args)  # done: skipped, the row is not measured again
    assert row_file.read_text() == measured and "rotnet-seed1: done, skipped" in capsys.readouterr().out
    # killed before the end: the result and the exported backbone are missing, the checkpoint is there
    row_file.unlink()
    (run_dir / "backbone.safetensors").unlink()
    logged = (run_dir / "metrics.jsonl").read_text()
    run(monkeypatch, *args)
    assert row_file.exists() and (run_dir / "backbone.safetensors").exists()
    # resumed, not restarted: the training log was continued from the checkpoint, not rewritten from step 0
    assert (run_dir / "metrics.jsonl").read_text().startswith(logged)


def test_a_row_another_process_is_measuring_is_skipped_and_measured_once_it_is_free(
        tiny_bench: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    args = ("--methods", "rotnet", "--epochs", "1", "--seed", "2", "--reuse", "--skip-done")
    lock = tiny_bench / "runs" / "bench-methods" / "epochs1" / "rotnet-seed2.lock"
    lock.parent.mkdir(parents=True)
    row_file = tiny_bench / "results" / "epochs1" / "rotnet-seed2.json"
    with lock.open("w") as held:  # another queue's process, as the kernel sees it: a second open file holding it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        run(monkeypatch, *args)
        assert not row_file.exists()
        assert "rotnet-seed2: being measured by another process, skipped" in capsys.readouterr().out
    run(monkeypatch, *args)  # released (as when that process ends or is killed): this one measures it
    assert json.loads(row_file.read_text())["seed"] == 2
