"""Checkpoints: written atomically, read back without unpickling arbitrary objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pretrainlab.atomic import atomic_path
from pretrainlab.errors import PretrainlabError

CHECKPOINT_NAME = "last.pt"


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / CHECKPOINT_NAME


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Writes `state` to checkpoints/last.pt via a temporary file and a rename: never half-written."""
    path = checkpoint_path(run_dir)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = checkpoint_path(run_dir)
    if not path.exists():
        raise PretrainlabError(f"--resume: no checkpoint in {path.parent}; start the run without --resume")
    return torch.load(path, map_location="cpu", weights_only=True)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_metrics(run_dir: Path, after_step: int) -> None:
    """On resume, drops records logged after the checkpoint so the log reads like one uninterrupted run."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= after_step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))
