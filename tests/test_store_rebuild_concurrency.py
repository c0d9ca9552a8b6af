"""`store rebuild` while writers record results: every row a writer logged is in the store afterwards.

A rebuild replaces the store's content with what the run folders' logs hold. A writer logs a row in its run
folder first, then inserts it into the store. If the rebuild read the logs before taking its write lock, a row
logged and inserted in between was deleted by the replacement (3,998 of 4,000 rows survived one writer and
three rebuilds). The writers here run in threads with their own connections, each started exactly inside that
window (after the rebuild read a log), so the test is deterministic instead of a race that rarely hits.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

import pretrainlab.store.rebuild as rebuild_module
from pretrainlab.store import EvaluationRecorder, ResultsStore, rebuild_store

REBUILDS = 5
ROWS_BEFORE = 3


class Result:
    def __init__(self, index: int) -> None:
        self.protocol, self.metric, self.data, self.backbone = "knn", f"m{index}", "builtin", "writer"
        self.value, self.seconds, self.higher_is_better, self.settings = float(index), 0.01, True, {}


def test_writers_during_repeated_rebuilds_lose_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    run_dir = runs / "writer-run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("method: simclr\n")
    store_path = runs / "store.db"
    recorder = EvaluationRecorder(ResultsStore(store_path), "writer", "sha256:0", run_dir)
    for index in range(ROWS_BEFORE):
        recorder([Result(index)], seed=0)
    writers: list[threading.Thread] = []
    original_read = rebuild_module.read_evaluations

    def read_then_let_a_writer_in(path: Path) -> list:
        rows = original_read(path)
        if path.parent == run_dir:  # one writer per rebuild, right after the rebuild read this run's log
            writer = threading.Thread(target=recorder, args=([Result(ROWS_BEFORE + len(writers))],), kwargs={"seed": 0})
            writers.append(writer)
            writer.start()
            writer.join(timeout=0.5)  # finishes at once without the rebuild's lock; waits for it with the lock
        return rows

    monkeypatch.setattr(rebuild_module, "read_evaluations", read_then_let_a_writer_in)
    for rebuild in range(1, REBUILDS + 1):
        rebuild_store(ResultsStore(store_path), runs)
        writers[-1].join(timeout=60)
        assert not writers[-1].is_alive()
        logged = len((run_dir / "evaluations.jsonl").read_text().splitlines())
        stored = sqlite3.connect(store_path).execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        assert logged == ROWS_BEFORE + rebuild
        assert stored == logged, f"rebuild {rebuild}: {logged - stored} of {logged} logged rows missing from the store"
