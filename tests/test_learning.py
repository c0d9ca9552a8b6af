"""Learning is tested, not only running: a shortened demo beats its own random initialisation on kNN."""

from __future__ import annotations

import json
from pathlib import Path

from pretrainlab.demo import format_table, run_demo


def test_shortened_demo_beats_random_init_by_five_points(tmp_path: Path) -> None:
    rows = run_demo(out=str(tmp_path / "demo"), epochs=3, show_progress=False)
    row = rows[0]
    assert row["knn_top1"] >= row["random_knn_top1"] + 5, row
    assert row["linear_top1"] > 50 and row["random_linear_top1"] > 10
    saved = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
    assert saved["knn_top1"] == row["knn_top1"]
    table = format_table(rows)
    assert "kNN top-1" in table and "k=20" in table
