"""`pretrainlab store rebuild`: re-index run folders, the source of truth, into the store."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from pretrainlab.errors import PretrainlabError
from pretrainlab.store.database import EXTERNAL_LOG_SUFFIX, ResultsStore
from pretrainlab.store.jsonlog import EVALUATIONS_LOG, read_evaluations
from pretrainlab.store.rows import CheckpointRow, EvaluationRow, RunRow
from pretrainlab.store.runs import describe_run

log = logging.getLogger(__name__)


@dataclass
class RebuildSummary:
    runs: int
    checkpoints: int
    evaluations: int


def find_run_folders(runs_dir: Path) -> list[Path]:
    """Folders under `runs_dir` holding a config.yaml (a pre-training) or an evaluations.jsonl."""
    markers = [*runs_dir.rglob("config.yaml"), *runs_dir.rglob(EVALUATIONS_LOG)]
    return sorted({marker.parent for marker in markers})


def rebuild_store(store: ResultsStore, runs_dir: Path | None = None) -> RebuildSummary:
    """Replaces the store's content with what the run folders under `runs_dir` (default: the store's
    folder) and the logs of external backbones (this store's, and those in `runs_dir`) hold.

    A run folder that moved keeps its evaluations: their run_path is set to where the folder is now.
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else store.path.parent
    if not runs_dir.is_dir():
        raise PretrainlabError(f"runs folder not found: {runs_dir}")
    # Read inside the write transaction, so no row is inserted between this read and the replacement.
    runs, checkpoints, evaluations = store.replace_all(lambda: collect_rows(store, runs_dir))
    log.info("indexed %d runs, %d checkpoint files, %d evaluations from %s", len(runs), len(checkpoints),
             len(evaluations), runs_dir)
    return RebuildSummary(len(runs), len(checkpoints), len(evaluations))


def collect_rows(store: ResultsStore, runs_dir: Path) -> tuple[list[RunRow], list[CheckpointRow],
                                                               list[EvaluationRow]]:
    """What the run folders under `runs_dir` and the logs of external backbones hold, as store rows."""
    runs: list[RunRow] = []
    checkpoints: list[CheckpointRow] = []
    evaluations: list[EvaluationRow] = []
    for folder in find_run_folders(runs_dir):
        run, files = describe_run(folder)
        if (folder / "config.yaml").is_file():
            runs.append(run)
            checkpoints.extend(files)
        evaluations.extend(replace(row, run_path=run.path) if row.run_path else row
                           for row in read_evaluations(folder / EVALUATIONS_LOG))
    # Logs of timm backbones lie beside their store: this store's, and any other store's in the runs folder.
    for log_path in sorted({store.external_log, *runs_dir.glob(f"*{EXTERNAL_LOG_SUFFIX}")}):
        evaluations.extend(read_evaluations(log_path))
    return runs, checkpoints, list({row.uid: row for row in evaluations}.values())
