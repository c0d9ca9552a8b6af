"""The results store: rows round-trip, schema versioning, run-folder logs, rebuild from run folders."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from pretrainlab.errors import PretrainlabError
from pretrainlab.store import (
    EVALUATIONS_LOG,
    EvaluationRecorder,
    EvaluationRow,
    ResultsStore,
    file_fingerprint,
    read_evaluations,
    rebuild_store,
)
from pretrainlab.store.jsonlog import append_lines
from pretrainlab.store.schema import SCHEMA_VERSION


@dataclass
class FakeResult:
    """Quacks like EvalResult: the store must not need the eval layer."""

    protocol: str
    metric: str
    value: float
    data: str = "builtin"
    seconds: float = 1.5
    backbone: str = "timm:tinycnn"
    higher_is_better: bool = True
    settings: dict = field(default_factory=lambda: {"k": 20, "note": "x"})


def sample_row(**changes) -> EvaluationRow:
    values = dict(backbone="timm:tinycnn", fingerprint="random-init:abc", data="builtin", protocol="knn",
                  metric="top1", value=91.25, seed=2, seconds=3.5, settings={"k": 20, "nested": [1, 2]})
    values.update(changes)
    return EvaluationRow(**values)


def test_row_round_trips_through_json_and_sql(tmp_path: Path) -> None:
    rows = [sample_row(), sample_row(value=math.nan, higher_is_better=False, run_path="/somewhere", seed=0)]
    for row in rows:
        again = EvaluationRow.from_json(row.to_json())
        assert again.to_sql() == row.to_sql()
    store = ResultsStore(tmp_path / "results.db")
    assert store.add_evaluations(rows) == 2
    stored = store.evaluations()
    assert [r.uid for r in stored] == [r.uid for r in rows]
    assert stored[0] == rows[0]
    assert math.isnan(stored[1].value) and stored[1].higher_is_better is False and stored[1].run_path == "/somewhere"


def test_same_uid_is_stored_once(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results.db")
    row = sample_row()
    assert store.add_evaluations([row]) == 1
    assert store.add_evaluations([row, sample_row()]) == 1
    assert store.count("evaluations") == 2


def test_store_uses_wal_and_records_its_schema_version(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results.db")
    store.add_evaluations([sample_row()])
    connection = sqlite3.connect(store.path)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(PretrainlabError, match="newer than this pretrainlab"):
        ResultsStore(store.path).evaluations()


def test_missing_or_foreign_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(PretrainlabError, match="no results store"):
        ResultsStore(tmp_path / "absent.db").evaluations()
    foreign = tmp_path / "foreign.db"
    foreign.write_text("this is not sqlite, just text that is long enough to fill a page header " * 20)
    with pytest.raises(PretrainlabError, match="not a usable results store") as error:
        ResultsStore(foreign).evaluations()
    assert "\n" not in str(error.value)


def test_torn_last_line_of_a_log_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / EVALUATIONS_LOG
    rows = [sample_row(seed=0), sample_row(seed=1)]
    append_lines(log, [row.to_json() for row in rows])
    with open(log, "a") as handle:
        handle.write(sample_row().to_json()[:40])  # a crash mid-write
    assert [row.uid for row in read_evaluations(log)] == [row.uid for row in rows]


def make_run_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    config = {"method": "simclr", "backbone": "tinycnn", "data": "builtin", "resolved": {"img_size": 28}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = [{"step": 10, "loss": 5.0}, {"step": 20, "epoch": 1, "knn_top1": 80.5, "knn_k": 20},
               {"step": 20, "loss": 4.25}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (path / "backbone.safetensors").write_bytes(b"weights of the run")
    (path / "checkpoints").mkdir()
    (path / "checkpoints" / "last.pt").write_bytes(b"checkpoint bytes")
    return path


def test_recorder_writes_run_folder_then_store_and_rebuild_reproduces_the_rows(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = make_run_folder(runs / "simclr-a")
    store = ResultsStore(runs / "pretrainlab.db")
    run_recorder = EvaluationRecorder(store, "runs/simclr-a", file_fingerprint(run / "backbone.safetensors"), run)
    for seed in range(3):
        run_recorder([FakeResult("knn", "top1", 80 + seed), FakeResult("linear", "top1", 85 + seed)], seed)
    timm_recorder = EvaluationRecorder(store, "timm:tinycnn", "random-init:0123")
    timm_recorder([FakeResult("knn", "top1", 60.0)], 0)

    assert len(read_evaluations(run / EVALUATIONS_LOG)) == 6
    assert len(read_evaluations(store.external_log)) == 1
    assert store.count("runs") == 1 and store.count("checkpoints") == 2
    before = sorted(row.to_sql() for row in store.evaluations())
    assert len(before) == 7

    store.path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{store.path}{suffix}").unlink(missing_ok=True)
    fresh = ResultsStore(store.path)
    summary = rebuild_store(fresh)
    assert (summary.runs, summary.checkpoints, summary.evaluations) == (1, 2, 7)
    assert sorted(row.to_sql() for row in fresh.evaluations()) == before

    elsewhere = ResultsStore(tmp_path / "elsewhere.db")  # a store outside the runs folder finds the same rows
    assert rebuild_store(elsewhere, runs).evaluations == 7
    assert sorted(row.to_sql() for row in elsewhere.evaluations()) == before

    indexed = sqlite3.connect(fresh.path).execute(
        "SELECT name, method, steps, final_loss, last_knn_top1 FROM runs").fetchall()
    assert indexed == [("simclr-a", "simclr", 20, 4.25, 80.5)]
    fingerprints = dict(sqlite3.connect(fresh.path).execute("SELECT kind, fingerprint FROM checkpoints").fetchall())
    assert fingerprints["export"] == file_fingerprint(run / "backbone.safetensors")


def test_rebuild_follows_a_moved_run_folder_and_replaces_stale_rows(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = make_run_folder(runs / "first")
    store = ResultsStore(tmp_path / "elsewhere.db")
    EvaluationRecorder(store, "first", "sha256:1", run)([FakeResult("knn", "top1", 70.0)], 0)
    moved = run.rename(runs / "renamed")
    rebuild_store(store, runs)
    rows = store.evaluations()
    assert len(rows) == 1 and rows[0].run_path == str(moved.resolve())
    assert [path for path, _, _ in store.runs()] == [str(moved.resolve())]


def test_rebuild_needs_an_existing_runs_folder(tmp_path: Path) -> None:
    with pytest.raises(PretrainlabError, match="runs folder not found"):
        rebuild_store(ResultsStore(tmp_path / "x.db"), tmp_path / "missing")


def test_file_fingerprint_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "w.bin"
    path.write_bytes(bytes(range(256)) * 5000)
    assert file_fingerprint(path) == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_cli_store_rebuild(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pretrainlab.cli import main

    runs = tmp_path / "runs"
    run = make_run_folder(runs / "r")
    EvaluationRecorder(ResultsStore(runs / "a.db"), "r", "sha256:1", run)([FakeResult("knn", "top1", 1.0)], 0)
    assert main(["store", "rebuild", "--store", str(tmp_path / "b.db"), "--runs", str(runs)]) == 0
    assert capsys.readouterr().out.strip().endswith("1 runs, 2 checkpoint files, 1 evaluations")
    assert main(["store", "rebuild", "--store", str(tmp_path / "b.db"), "--runs", str(tmp_path / "none")]) == 2
    assert "runs folder not found" in capsys.readouterr().err


def test_a_version_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    from pretrainlab.store.schema import TABLES

    path = tmp_path / "v1.db"
    connection = sqlite3.connect(path)
    for statement in TABLES:
        connection.execute(statement)
    connection.execute("ALTER TABLE evaluations DROP COLUMN call_seconds")  # version 1 had no such column
    old = sample_row()
    connection.execute("INSERT INTO evaluations (uid, created, session, backbone, run_path, fingerprint, data, "
                       "protocol, metric, value, higher_is_better, seed, seconds, settings_json) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", old.to_sql()[:-1])
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()
    store = ResultsStore(path)
    [migrated] = store.evaluations()
    assert migrated.uid == old.uid and migrated.call_seconds is None
    store.add_evaluations([sample_row(call_seconds=2.5)])
    assert sorted(r.call_seconds or 0 for r in store.evaluations()) == [0, 2.5]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
