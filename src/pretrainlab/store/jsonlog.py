"""Append-only JSON-lines logs in run folders: the source of truth the store is rebuilt from."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from pretrainlab.store.rows import EvaluationRow

try:  # POSIX advisory locks; elsewhere O_APPEND alone keeps each single write() whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

EVALUATIONS_LOG = "evaluations.jsonl"


def append_lines(path: Path, lines: Iterable[str]) -> None:
    """Appends `lines` with one write() under an exclusive lock, then fsyncs.

    O_APPEND places every write at the current end, the lock keeps two writers' batches whole, and
    one write() per batch means a reader sees all of a batch's lines or, after a crash, a torn last
    line that `read_evaluations` skips.
    """
    payload = "".join(line.rstrip("\n") + "\n" for line in lines).encode()
    if not payload:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        written = os.write(descriptor, payload)
        if written != len(payload):
            raise OSError(f"short write to {path}: {written} of {len(payload)} bytes")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)  # closing releases the lock


def append_evaluations(path: Path, rows: Iterable[EvaluationRow]) -> None:
    append_lines(path, (row.to_json() for row in rows))


def read_evaluations(path: Path) -> list[EvaluationRow]:
    """The rows of a log; a line that does not parse (a torn write) is skipped with a warning."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(EvaluationRow.from_json(line))
        except (ValueError, TypeError) as error:
            log.warning("%s line %d is not an evaluation record (%s); skipped", path, number, error)
    return rows
