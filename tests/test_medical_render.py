"""bench/medical_render.py: docs/medical.md's table is the mean of the seeds with both values, ordered per fraction."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.medical_render import render  # noqa: E402


def write(folder: Path, name: str, seed: int, at1: float, at100: float, probe: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    row = {"backbone": "tinycnn", "finetune": {"mAP@1%": at1, "mAP@100%": at100}, "probe": {"mAP": probe}}
    (folder / f"{name}-seed{seed}.json").write_text(json.dumps(row))


def test_medical_table_orders_the_cnn_methods_at_each_fraction(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write(results, "spark", 0, 30.0, 80.0, 50.0)
    write(results, "spark", 1, 32.0, 82.0, 52.0)
    write(results, "simclr", 0, 40.0, 70.0, 60.0)
    page = tmp_path / "medical.md"
    page.write_text("# m\n\n<!-- medical-table -->\nold\n<!-- /medical-table -->\nafter\n")
    render(results, page, [0.01, 1.0])
    text = page.read_text()
    assert "| spark | tinycnn | 0, 1 | 31.0 (30.0, 32.0) | 81.0 (80.0, 82.0) | 51.0 (50.0, 52.0) |" in text
    assert "| simclr | tinycnn | 0 | 40.0 | 70.0 | 60.0 |" in text
    assert "1%: simclr 40.0 > spark 31.0; 100%: spark 81.0 > simclr 70.0." in text
    assert "old" not in text and text.endswith("<!-- /medical-table -->\nafter\n")
