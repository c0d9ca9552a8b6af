"""Reading a run folder into store rows: config.yaml, metrics.jsonl, its exported and checkpoint files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from pretrainlab.store.fingerprint import file_fingerprint
from pretrainlab.store.rows import CheckpointRow, RunRow

log = logging.getLogger(__name__)

EXPORT_NAME = "backbone.safetensors"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl; a torn last line (a crash mid-write) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            log.warning("%s: skipped a line that is not JSON", path)
    return records


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def describe_run(run_dir: Path) -> tuple[RunRow, list[CheckpointRow]]:
    """The store's view of one run folder."""
    run_dir = Path(run_dir).resolve()
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)
    losses = [record for record in metrics if "loss" in record]
    knn = [record["knn_top1"] for record in metrics if "knn_top1" in record]
    run = RunRow(path=str(run_dir), name=run_dir.name, config=config, method=config.get("method"),
                 backbone=config.get("backbone"), data=config.get("data"),
                 steps=int(losses[-1]["step"]) if losses else None,
                 final_loss=float(losses[-1]["loss"]) if losses else None,
                 last_knn_top1=float(knn[-1]) if knn else None)
    files = [(run_dir / EXPORT_NAME, "export")]
    files += [(path, "checkpoint") for path in sorted((run_dir / "checkpoints").glob("*.pt"))]
    checkpoints = [CheckpointRow(str(path), str(run_dir), kind, file_fingerprint(path), path.stat().st_size,
                                 path.stat().st_mtime) for path, kind in files if path.is_file()]
    return run, checkpoints
