"""`explain_backbone`: run analyses on a run folder or timm:NAME and record one summary per metric.

Outputs go to RUN/explain/ (for a timm: target, to a folder named after it beside the store, e.g.
runs/timm-resnet18/explain/); summaries go to the run's evaluations.jsonl and the store as records of
protocol `explain.ANALYSIS`, so `pretrainlab compare` ranks backbones on them.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from pretrainlab.data import load_source
from pretrainlab.eval.record import EvalResult
from pretrainlab.explain.context import ExplainContext, ExplainSettings
from pretrainlab.explain.model import resolve_layer
from pretrainlab.explain.registry import ANALYSES, check_analyses, check_options
from pretrainlab.store import DEFAULT_STORE, EvaluationRecorder, ResultsStore

log = logging.getLogger(__name__)


@dataclass
class ExplainOutcome:
    results: list[EvalResult] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    out_dir: Path | None = None


def output_folder(label: str, run_dir: Path | None, store: Path | str | None) -> Path:
    """RUN/explain, or <store's folder>/<label made a file name>/explain for timm: targets."""
    if run_dir is not None:
        return Path(run_dir) / "explain"
    base = Path(store).parent if store is not None else Path(DEFAULT_STORE).parent
    return base / re.sub(r"[^A-Za-z0-9_.+-]+", "-", label).strip("-") / "explain"


def explain_backbone(spec: str, data: str, what: list[str], settings: ExplainSettings | None = None,
                     weights: Path | None = None, device: str = "auto", against: str | None = None,
                     against_weights: Path | None = None, store: Path | str | None = DEFAULT_STORE,
                     out: Path | None = None, download: bool = False) -> ExplainOutcome:
    """Runs the analyses `what` on `spec` (a run folder or timm:NAME) with images of `data`.

    Args:
        against: a second backbone for the analyses that compare two (cka).
        store: the results database; None records nothing.
        out: where arrays and figures go (default: see module docstring).
    """
    from pretrainlab.pipeline import resolve_device, seeded_target, weights_fingerprint

    settings = settings or ExplainSettings()
    for name in what:
        ANALYSES.get(name)  # an unknown name fails before any data is loaded
    check_options(what, settings.options)
    source = load_source(data, image_size=settings.img_size, download=download)
    target = seeded_target(spec, settings.img_size or source.image_size[0], source.channels, weights)
    check_analyses(what, target.backbone)
    if settings.layer is not None:
        resolve_layer(target.backbone, settings.layer)  # a misspelt layer fails before any work
    second = None if against is None else seeded_target(against, settings.img_size or source.image_size[0],
                                                        source.channels, against_weights)
    out_dir = Path(out) if out is not None else output_folder(target.label, target.run_dir, store)
    context = ExplainContext(target, source, resolve_device(device), out_dir, settings, second)
    recorder = None if store is None else EvaluationRecorder(ResultsStore(store), target.label,
                                                             weights_fingerprint(target, weights), target.run_dir)
    outcome = ExplainOutcome(out_dir=out_dir)
    for name in what:
        started = time.perf_counter()
        produced = ANALYSES.get(name)(context)
        log.info("%s: %d summaries, %d files in %.1f s", name, len(produced.results), len(produced.files),
                 time.perf_counter() - started)
        if recorder is not None and produced.results:
            recorder(produced.results, settings.seed, time.perf_counter() - started)
        outcome.results.extend(produced.results)
        outcome.files.extend(produced.files)
    return outcome
