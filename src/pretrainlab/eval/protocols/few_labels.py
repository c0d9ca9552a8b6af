"""Few labels: linear probe and fine-tuning on 1 %, 10 % and 100 % of the labelled training set.

The protocol of SimCLRv2 (Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models
are Strong Semi-Supervised Learners", arXiv 2006.10029: class-balanced 1 % and 10 % ImageNet
subsets) and of the small-data medical comparison that varies the fine-tuning set size (arXiv
2308.06534). Subsets are drawn per class, so each class keeps the same fraction of its images
(the class balance of the full set), fixed by the seed and nested: with one seed the 1 % subset
lies inside the 10 % one. Test images are always the whole test split.

Options: fractions (default [0.01, 0.1, 1.0]), seed; `few_labels_finetune` takes fine-tuning's
options too (epochs, lr, ...; a tiny subset still gets `min_steps` optimisation steps).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pretrainlab.data.subsets import class_balanced_subset, fraction_label
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.finetuning import FINETUNE_OPTIONS, FineTuning
from pretrainlab.eval.linear import linear_probe_accuracy
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, takes_options
from pretrainlab.eval.record import EvalResult

DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)


def read_fractions(options: dict[str, Any]) -> list[float]:
    given = options.get("fractions", DEFAULT_FRACTIONS)
    values = [given] if isinstance(given, int | float | str) else list(given)
    try:
        return [float(value) for value in values]
    except (TypeError, ValueError):
        raise PretrainlabError(f"option fractions must be numbers in (0, 1], e.g. [0.01, 0.1, 1.0], "
                               f"got {given!r}") from None


def run_fractions(context: EvalContext, protocol: str,
                  measure: Callable[[np.ndarray, int], tuple[float, dict[str, Any]]]) -> list[EvalResult]:
    """One record per fraction: `measure(subset_indices, seed)` -> (top-1 %, settings)."""
    seed = int(context.options.get("seed", 0))
    labels = context.source.train.labels
    subsets = [(fraction, class_balanced_subset(labels, fraction, seed, context.source.classes))
               for fraction in read_fractions(context.options)]  # every fraction checked before any training
    results = []
    for fraction, subset in subsets:
        started = time.perf_counter()
        accuracy, settings = measure(subset, seed)
        settings = {**context.base_settings(), **settings, "fraction": fraction, "labelled_images": len(subset),
                    "subset": "per-class fraction, nested, drawn by the seed", "seed": seed}
        results.append(EvalResult(protocol, context.source.spec, f"top1@{fraction_label(fraction)}", accuracy,
                                  time.perf_counter() - started, settings=settings, backbone=context.target.label))
    return results


@PROTOCOLS.register("few_labels_linear")
@takes_options("fractions")
def few_labels_linear(context: EvalContext) -> list[EvalResult]:
    """Linear probe (the foundation's L-BFGS logistic regression) on frozen features of each subset."""
    train_features, train_labels = context.features("train"), context.labels("train")

    def measure(subset: np.ndarray, seed: int) -> tuple[float, dict[str, Any]]:
        index = torch.from_numpy(subset)
        accuracy, l2 = linear_probe_accuracy(train_features[index], train_labels[index], context.features("test"),
                                             context.labels("test"), seed)
        return accuracy, {"l2": l2, "solver": "lbfgs"}

    return run_fractions(context, "few_labels_linear", measure)


@PROTOCOLS.register("few_labels_finetune")
@takes_options("fractions", *FINETUNE_OPTIONS)
def few_labels_finetune(context: EvalContext) -> list[EvalResult]:
    """Fine-tuning (backbone + fresh head) on each subset, tested on the whole test split."""
    tuning = FineTuning(context)
    train = context.source.train

    def measure(subset: np.ndarray, seed: int) -> tuple[float, dict[str, Any]]:
        model = tuning.finetune(train.images[subset], train.labels[subset], seed)
        return tuning.test_top1(model), tuning.describe(len(subset))

    return run_fractions(context, "few_labels_finetune", measure)
