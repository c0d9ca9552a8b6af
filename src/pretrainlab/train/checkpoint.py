"""Checkpoints: written atomically, read back without unpickling arbitrary objects."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from pretrainlab.atomic import atomic_path
from pretrainlab.errors import PretrainlabError
from pretrainlab.safe_files import load_torch_file

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_KEYS = ("method", "optimizer", "scaler", "step")


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / CHECKPOINT_NAME


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Writes `state` to checkpoints/last.pt via a temporary file and a rename: never half-written."""
    path = checkpoint_path(run_dir)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The training state of checkpoints/last.pt; a damaged, unsafe or foreign file is a one-line error."""
    path = checkpoint_path(run_dir)
    if not path.exists():
        raise PretrainlabError(f"--resume: no checkpoint in {path.parent} (the run stopped before its first one); "
                               "delete the folder and start again, or choose a new --out")
    state = load_torch_file(path, "checkpoint")
    if not isinstance(state, dict) or any(key not in state for key in CHECKPOINT_KEYS):
        raise PretrainlabError(f"checkpoint {path} is not a pretrainlab training checkpoint (expected the keys "
                               f"{', '.join(CHECKPOINT_KEYS)}); restore it from a copy of the run")
    return state


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Appends one JSON line with one write(): a kill leaves whole lines, or a torn last one that resume drops."""
    line = (json.dumps(record) + "\n").encode()
    descriptor = os.open(Path(run_dir) / "metrics.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def metrics_records(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) of every whole JSON object line; a torn line (a kill mid-write) is dropped with a warning."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            log.warning("%s line %d is not a whole JSON record (a write torn by a kill?); dropped", path, number)
            continue
        records.append((line, record))
    return records


def truncate_metrics(run_dir: Path, after_step: int) -> None:
    """On resume, drops records logged after the checkpoint (and torn lines) so the log reads like one run."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    kept = [line for line, record in metrics_records(path.read_text(errors="replace"), path)
            if record.get("step", 0) <= after_step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))
