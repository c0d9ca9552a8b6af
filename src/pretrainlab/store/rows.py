"""The rows the store holds, and their JSON form in a run folder's `evaluations.jsonl`."""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

EVALUATION_COLUMNS = ("uid", "created", "session", "backbone", "run_path", "fingerprint", "data", "protocol",
                      "metric", "value", "higher_is_better", "seed", "seconds", "settings_json", "call_seconds")


def plain_json(value: Any) -> Any:
    """Numpy and torch scalars (anything with `.item()`) become Python numbers; the rest becomes text."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


@dataclass
class EvaluationRow:
    """One per-seed measurement of one metric of one protocol on one backbone and dataset.

    Args:
        uid: unique id; the same in the store and in the run folder's log, so rebuilding keeps it.
        session: id shared by every row of one gauntlet invocation.
        backbone: label (run folder or timm:NAME[+weights file]).
        run_path: the resolved run folder, or None for a timm backbone.
        fingerprint: of the evaluated weights ("sha256:..." of the file, "random-init:..." of a random model).
        value: NaN when the protocol produced no number.
        seconds: as the protocol reports it for this metric.
        call_seconds: wall time of the protocol's whole call for this seed, measured by the caller (None when
            unknown): protocols differ in whether `seconds` is per metric or per call.
    """

    backbone: str
    fingerprint: str
    data: str
    protocol: str
    metric: str
    value: float
    seed: int
    seconds: float
    higher_is_better: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    run_path: str | None = None
    call_seconds: float | None = None
    session: str = ""
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)

    @classmethod
    def from_result(cls, result: Any, seed: int, fingerprint: str, run_path: str | None, session: str,
                    backbone: str | None = None, call_seconds: float | None = None) -> EvaluationRow:
        """From an `EvalResult` (duck-typed, so the store does not import the eval layer)."""
        return cls(backbone=backbone or result.backbone, fingerprint=fingerprint, data=result.data,
                   protocol=result.protocol, metric=result.metric, value=float(result.value), seed=int(seed),
                   seconds=float(result.seconds), higher_is_better=bool(result.higher_is_better),
                   settings=dict(result.settings), run_path=run_path, session=session, call_seconds=call_seconds)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=plain_json)

    @classmethod
    def from_json(cls, text: str) -> EvaluationRow:
        return cls(**json.loads(text))

    def to_sql(self) -> tuple[Any, ...]:
        value = None if math.isnan(self.value) else self.value
        settings = json.dumps(self.settings, sort_keys=True, default=plain_json)
        return (self.uid, self.created, self.session, self.backbone, self.run_path, self.fingerprint, self.data,
                self.protocol, self.metric, value, int(self.higher_is_better), self.seed, self.seconds, settings,
                self.call_seconds)

    @classmethod
    def from_sql(cls, row: tuple[Any, ...]) -> EvaluationRow:
        values = dict(zip(EVALUATION_COLUMNS, row, strict=True))
        settings = json.loads(values.pop("settings_json"))
        stored_value = values.pop("value")
        values["higher_is_better"] = bool(values["higher_is_better"])
        return cls(**values, value=math.nan if stored_value is None else stored_value, settings=settings)

    @property
    def identity(self) -> str:
        """What a backbone is across labels: its run folder, else its label."""
        return self.run_path or self.backbone


@dataclass
class RunRow:
    """A run folder as the store indexes it."""

    path: str
    name: str
    config: dict[str, Any]
    method: str | None = None
    backbone: str | None = None
    data: str | None = None
    steps: int | None = None
    final_loss: float | None = None
    last_knn_top1: float | None = None
    indexed_at: float = field(default_factory=time.time)

    def to_sql(self) -> tuple[Any, ...]:
        return (self.path, self.name, self.method, self.backbone, self.data,
                json.dumps(self.config, sort_keys=True, default=plain_json), self.steps, self.final_loss,
                self.last_knn_top1, self.indexed_at)


@dataclass
class CheckpointRow:
    """A file a run left: its exported backbone or its training checkpoint."""

    path: str
    run_path: str
    kind: str
    fingerprint: str
    bytes: int
    modified: float

    def to_sql(self) -> tuple[Any, ...]:
        return (self.path, self.run_path, self.kind, self.fingerprint, self.bytes, self.modified)
