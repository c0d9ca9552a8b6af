"""Input-space attacks turned into result records (one per epsilon, with seconds) and image grids.

Records use the store's `EvalResult`, so `pretrainlab compare` ranks backbones on robustness like on any
protocol. The protocol names the head and the defence (`adversarial` is the linear probe with no defence),
the metric names the attack, its norm and budget: `pgd_linf@8/255`, `autoattack_rand_linf@8/255`, so a
defence row always says which attack measured it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainlab.attack.figures import ImageRow, attack_rows, save_rows
from pretrainlab.attack.input_space import AttackSettings, eps_label
from pretrainlab.attack.model import AttackSubject, pixels, predict
from pretrainlab.attack.robustness import RobustnessOutcome, robust_accuracy
from pretrainlab.data.source import ImageSet
from pretrainlab.data.subsets import subset_indices
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget

log = logging.getLogger(__name__)

DEFAULT_EPS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
DEFAULT_MAX_TEST = 500


@dataclass
class InputSpaceRun:
    """What to run on one attacked model.

    Args:
        attacks: registered input-space attack names.
        eps: budgets in pixel units.
        protocol: the records' protocol name (names the head and the defence).
        metric_prefix: put before each attack's name (e.g. "bpda_" when gradients pass a defence by BPDA).
        settings: attack settings (steps, queries, ...).
        extra: settings every record carries (defence, data split, ...).
    """

    attacks: list[str]
    eps: list[float]
    norm: str = "linf"
    protocol: str = "adversarial"
    metric_prefix: str = ""
    settings: AttackSettings = field(default_factory=AttackSettings)
    seed: int = 0
    batch_size: int = 256
    extra: dict[str, Any] = field(default_factory=dict)


def test_images(target: EvalTarget, test: ImageSet, max_test: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Pixels (M, C, S, S) in [0, 1] and labels (M,) of a fixed class-balanced subset of the test split, classes
    interleaved."""
    kept = np.arange(len(test)) if not max_test or max_test >= len(test) else subset_indices(test, max_test)
    kept = kept[classes_interleaved(test.labels[kept])]  # the first images of a figure show different classes
    return pixels(target, test.images[kept]), torch.from_numpy(test.labels[kept]).long(), len(kept)


def classes_interleaved(labels: np.ndarray) -> np.ndarray:
    """An order of `labels` (N,) that takes the first image of every class, then the second of every class, ..."""
    rank_in_class = np.zeros(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rank_in_class[members] = np.arange(len(members))
    return np.lexsort((labels, rank_in_class))


def outcome_records(outcome: RobustnessOutcome, run: InputSpaceRun, subject: AttackSubject, data: str,
                    backbone: str, images: int) -> list[EvalResult]:
    """One record per budget (robust accuracy, that budget's seconds); the clean accuracy is a separate record."""
    base = {"attack": outcome.attack, "norm": outcome.norm, "images": images, "seed": run.seed, "head": subject.head,
            **subject.head_settings, "settings": vars(run.settings), "clean_top1": outcome.clean_accuracy,
            "robust_rule": "correct clean and under the attack at every budget up to eps", **run.extra}
    records = []
    for result in outcome.per_eps:
        metric = f"{run.metric_prefix}{outcome.attack}_{outcome.norm}@{eps_label(result.eps, outcome.norm)}"
        records.append(EvalResult(run.protocol, data, metric, result.robust_accuracy, result.seconds,
                                  settings={**base, "eps": result.eps, "max_perturbation": result.max_norm},
                                  backbone=backbone))
    return records


def save_outcome_figure(path: Path, outcome: RobustnessOutcome, model: torch.nn.Module, labels: torch.Tensor,
                        title: str) -> Path:
    """Clean row, then adversarial and perturbation x10 rows for each budget, captions = predictions."""
    clean = outcome.clean_examples
    kept_labels = labels[: len(clean)]
    clean_predictions = predict(model, clean)
    rows: list[ImageRow] = []
    for index, (eps, adversarial) in enumerate(outcome.examples.items()):
        three = attack_rows(clean, adversarial, kept_labels, clean_predictions, predict(model, adversarial),
                            f"eps {eps_label(eps, outcome.norm)}")
        rows.extend(three if index == 0 else three[1:])
    return save_rows(path, rows, title)


def run_input_space(subject: AttackSubject, images: torch.Tensor, labels: torch.Tensor, run: InputSpaceRun, data: str,
                    backbone: str, figures: Path | None = None, show_progress: bool = False) -> list[EvalResult]:
    """Every attack of `run` at every budget on `images` (M, C, S, S) in [0, 1]; records, plus PNG grids in
    `figures` (one per attack). The first record is the clean accuracy (`top1@clean`)."""
    records: list[EvalResult] = []
    for attack in run.attacks:
        outcome = robust_accuracy(subject.model, images, labels, attack, list(run.eps), run.norm, run.settings,
                                  subject.num_classes, run.seed, run.batch_size, show_progress=show_progress)
        if not records:
            records.append(EvalResult(run.protocol, data, "top1@clean", outcome.clean_accuracy, 0.0,
                                      settings={"images": len(images), "head": subject.head, **subject.head_settings,
                                                **run.extra}, backbone=backbone))
        records.extend(outcome_records(outcome, run, subject, data, backbone, len(images)))
        log.info("%s %s %s: clean %.1f %%, %s", run.protocol, attack, run.norm, outcome.clean_accuracy,
                 ", ".join(f"{eps_label(r.eps, run.norm)} {r.robust_accuracy:.1f} %" for r in outcome.per_eps))
        if figures is not None:
            title = f"{backbone} | {run.protocol} | {run.metric_prefix}{attack} {run.norm} | {data}"
            save_outcome_figure(Path(figures) / f"{run.protocol}_{run.metric_prefix}{attack}_{run.norm}.png",
                                outcome, subject.model, labels, title)
    return records
