"""The result record every protocol returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class EvalResult:
    """One measured number and everything needed to interpret it.

    Args:
        protocol: e.g. "knn", "linear".
        data: the dataset spec evaluated on.
        metric: e.g. "top1" (values in percent).
        value: mean over seeds.
        spread: standard deviation over seeds (None for a single seed).
        seconds: wall time of the evaluation, feature extraction included.
        settings: protocol settings (k, temperature, seeds, split, image size...).
        backbone: what was evaluated (run folder, or timm:NAME).
        higher_is_better: False for costs such as milliseconds per batch or error rates.
    """

    protocol: str
    data: str
    metric: str
    value: float
    seconds: float
    spread: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    backbone: str = ""
    higher_is_better: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
