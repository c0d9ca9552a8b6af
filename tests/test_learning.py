"""Learning is tested, not only running: a shortened demo beats its own random initialisation on kNN."""

from __future__ import annotations

import json
from pathlib import Path

from pretrainlab.demo import format_table, run_demo
from pretrainlab.store import EVALUATIONS_LOG, ResultsStore, read_evaluations


def test_shortened_demo_beats_random_init_by_five_points(tmp_path: Path) -> None:
    rows = run_demo(out=str(tmp_path / "demo"), epochs=3, show_progress=False, store=tmp_path / "store.db")
    row = rows[0]
    assert row["knn_top1"] >= row["random_knn_top1"] + 5, row
    assert row["linear_top1"] > 50 and row["random_linear_top1"] > 10
    saved = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
    assert saved["knn_top1"] == row["knn_top1"]
    table = format_table(rows)
    assert "kNN top-1" in table and "k=20" in table and f"report: {tmp_path / 'demo' / 'report.html'}" in table
    # recorded like any evaluation: the run's log and the store, the random init under timm:tinycnn
    logged = {(r.protocol, r.value) for r in read_evaluations(tmp_path / "demo" / EVALUATIONS_LOG)}
    assert logged == {("knn", row["knn_top1"]), ("linear", row["linear_top1"])}
    stored = {(r.backbone, r.protocol): r.value for r in ResultsStore(tmp_path / "store.db").evaluations()}
    assert stored[("timm:tinycnn", "knn")] == row["random_knn_top1"]
    page = (tmp_path / "demo" / "report.html").read_text()
    assert "none yet" not in page and "random init" in page and f"{row['random_knn_top1']:.2f}" in page
