"""Recording evaluation results: first in the run folder (the source of truth), then in the store."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pretrainlab.store.database import ResultsStore
from pretrainlab.store.jsonlog import EVALUATIONS_LOG, append_evaluations
from pretrainlab.store.rows import EvaluationRow
from pretrainlab.store.runs import describe_run

log = logging.getLogger(__name__)


class EvaluationRecorder:
    """Records the per-seed results of one backbone; called once per (protocol, seed).

    Args:
        store: the results database.
        backbone: the label rows carry (run folder or timm:NAME).
        fingerprint: of the evaluated weights.
        run_dir: the run folder (its evaluations.jsonl gets every row), or None for a timm backbone,
            whose rows go to the store's log of external backbones instead.
    """

    def __init__(self, store: ResultsStore, backbone: str, fingerprint: str, run_dir: Path | None = None) -> None:
        self.store = store
        self.backbone = backbone
        self.fingerprint = fingerprint
        self.run_dir = Path(run_dir).resolve() if run_dir is not None else None
        self.session = uuid.uuid4().hex
        self.rows: list[EvaluationRow] = []
        if self.run_dir is not None and (self.run_dir / "config.yaml").is_file():
            self.store.index_run(*describe_run(self.run_dir))

    @property
    def log_path(self) -> Path:
        return self.run_dir / EVALUATIONS_LOG if self.run_dir is not None else self.store.external_log

    def __call__(self, results: Iterable[Any], seed: int, call_seconds: float | None = None) -> list[EvaluationRow]:
        rows = [EvaluationRow.from_result(result, seed, self.fingerprint, str(self.run_dir) if self.run_dir else None,
                                          self.session, self.backbone, call_seconds)
                for result in results]
        append_evaluations(self.log_path, rows)
        self.store.add_evaluations(rows)
        self.rows.extend(rows)
        return rows
