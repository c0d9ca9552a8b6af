"""Eight processes writing to one store (and one run folder's log) at once lose nothing."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

from pretrainlab.store import EVALUATIONS_LOG, EvaluationRecorder, EvaluationRow, ResultsStore, read_evaluations

PROCESSES = 8
SINGLE_WRITES = 20
BATCH = 10


class Result:
    def __init__(self, worker: int, index: int) -> None:
        self.protocol, self.metric, self.data, self.backbone = "knn", f"m{index}", "builtin", f"worker{worker}"
        self.value, self.seconds, self.higher_is_better, self.settings = float(worker * 1000 + index), 0.1, True, {}


def write_results(store_path: str, run_dir: str, worker: int, start: multiprocessing.Event) -> None:
    # Half the workers give up on SQLite's own wait almost at once, so the retry loop is exercised too.
    store = ResultsStore(store_path, busy_seconds=0.001 if worker % 2 else 5.0)
    start.wait()
    recorder = EvaluationRecorder(store, f"worker{worker}", "sha256:0", Path(run_dir))
    for index in range(SINGLE_WRITES):
        recorder([Result(worker, index)], seed=index)
    batch = [EvaluationRow(f"worker{worker}", "sha256:0", "builtin", "linear", f"b{i}", float(i), 0, 0.1)
             for i in range(BATCH)]
    store.add_evaluations(batch)


def test_eight_processes_writing_at_once_lose_no_row(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    run_dir = tmp_path / "run"
    workers = [context.Process(target=write_results, args=(str(tmp_path / "shared.db"), str(run_dir), w, start))
               for w in range(PROCESSES)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES

    connection = sqlite3.connect(tmp_path / "shared.db")
    total = connection.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    per_worker = dict(connection.execute("SELECT backbone, COUNT(*) FROM evaluations GROUP BY backbone"))
    assert total == PROCESSES * (SINGLE_WRITES + BATCH)
    assert per_worker == {f"worker{w}": SINGLE_WRITES + BATCH for w in range(PROCESSES)}
    assert connection.execute("SELECT COUNT(DISTINCT uid) FROM evaluations").fetchone()[0] == total

    logged = read_evaluations(run_dir / EVALUATIONS_LOG)  # every line whole: none torn by a concurrent append
    assert len(logged) == PROCESSES * SINGLE_WRITES
    assert len((run_dir / EVALUATIONS_LOG).read_text().splitlines()) == PROCESSES * SINGLE_WRITES
    expected = {float(w * 1000 + i) for w in range(PROCESSES) for i in range(SINGLE_WRITES)}
    assert {row.value for row in logged} == expected
