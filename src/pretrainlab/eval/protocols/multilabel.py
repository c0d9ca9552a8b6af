"""Multi-label evaluation: a linear head on frozen features, one logistic regression per class.

For sources with several labels per image (a multi-hot (N, K) `y_train` in an npz, or the classes
present on `composed:` canvases). The head is linear on standardised pooled features and trained
with binary cross-entropy, full-batch L-BFGS, with the L2 strength chosen by validation mAP on a
random 10 % of the training split (drawn by the seed) and then refit on the whole training split, as
the single-label linear probe of eval/linear.py.

Metrics on the test split, in percent: `mAP`, the macro mean over classes of the average precision of
the test images ranked by the class's score (classes without a positive test image are left out:
their AP is undefined); `subset_accuracy`, the share of test images whose thresholded predictions
(probability > 0.5) match all K labels exactly.

With rules (`--option rules=PATH`, a YAML file over the dataset's class names, eval/consistency.py; a
`composed:` source ships its own, the count of objects its canvases were built with), also
`rule_violations`: the percent of test images whose thresholded predictions break at least one rule,
beside mAP, with each rule's own share and the ground truth's share (0 unless the rules are wrong).

Options: seed, rules.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from pretrainlab.data.source import ImageSource
from pretrainlab.data.splits import stratified_indices
from pretrainlab.eval.average_precision import average_precisions
from pretrainlab.eval.consistency import RULES_KEY, Rule, load_rules, parse_rules, violation_share, violations
from pretrainlab.eval.linear import L2_GRID, fit_lbfgs_linear, standardise
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, applies_when, takes_options
from pretrainlab.eval.record import EvalResult

VALIDATION_FRACTION = 0.1


def needs_multilabels(source: ImageSource) -> str | None:
    if source.has_multilabels:
        return None
    return (f"needs several labels per image, but dataset '{source.spec}' has none "
            "(use an npz with multi-hot y_train (N, K), or composed:SPEC)")


def fit_multilabel_logistic(features: torch.Tensor, targets: torch.Tensor, l2: float,
                            max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """features (N, D) standardised, targets (N, K) in {0, 1} -> weight (D, K), bias (K,)."""

    def loss(logits: torch.Tensor) -> torch.Tensor:
        # Summed over classes, averaged over images: each class is its own logistic regression.
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(features)

    return fit_lbfgs_linear(features, targets.shape[1], loss, l2, max_iter)


def per_class_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(K,) AP of each class from scores (M, K) and targets (M, K); NaN for a class with no positive image."""
    return average_precisions(scores.T.double(), targets.T.bool())


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro mAP in percent over the classes with at least one positive image."""
    return float(per_class_average_precision(scores, targets).nanmean()) * 100


def subset_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Percent of images whose predictions (logit > 0, i.e. probability > 0.5) match every label."""
    return float(((logits > 0) == targets.bool()).all(dim=1).float().mean()) * 100


def choose_l2(features: torch.Tensor, targets: torch.Tensor, seed: int) -> float:
    """The L2 strength of L2_GRID with the best mAP on a random validation slice drawn by `seed`."""
    fit_idx, val_idx = stratified_indices(np.zeros(len(features), dtype=np.int64), VALIDATION_FRACTION, seed)
    fit_x, val_x = (x.float() for x in standardise(features[fit_idx].double(), features[val_idx].double()))
    best_l2, best_map = L2_GRID[0], -1.0
    for l2 in L2_GRID:
        weight, bias = fit_multilabel_logistic(fit_x, targets[fit_idx], l2)
        score = mean_average_precision(val_x @ weight + bias, targets[val_idx])
        if score > best_map:
            best_l2, best_map = l2, score
    return best_l2


def protocol_rules(context: EvalContext) -> tuple[list[Rule], str | None]:
    """The rules of `--option rules=PATH`, else the source's own (composed canvases), else none; and their origin."""
    source = context.source
    classes = source.classes or [str(index) for index in range(source.train.multilabels.shape[1])]
    path = context.options.get("rules")
    if path is not None:
        return load_rules(str(path), classes), str(path)
    if RULES_KEY in source.extra:
        return parse_rules(source.extra[RULES_KEY], classes, f"rules shipped with '{source.spec}'"), source.spec
    return [], None


def rule_results(logits: torch.Tensor, targets: torch.Tensor, rules: list[Rule]) -> tuple[float, dict]:
    """(percent of test images breaking a rule, settings: the rules, each one's share, the ground truth's share)."""
    predicted = logits > 0  # (M, K), probability > 0.5
    per_rule = violations(predicted, rules).float().mean(dim=0) * 100  # (R,)
    return violation_share(predicted, rules), {
        "rules": [rule.text for rule in rules],
        "rule_violations_per_rule": [round(float(value), 3) for value in per_rule],
        "rule_violations_ground_truth": violation_share(targets.bool(), rules)}


@PROTOCOLS.register("multilabel")
@takes_options("rules")
@applies_when(needs_multilabels)
def multilabel_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    seed = int(context.options.get("seed", 0))
    rules, rules_origin = protocol_rules(context)  # before any feature work: a bad rule file stops here
    train_targets = torch.from_numpy(context.source.train.multilabels).float()  # (N, K)
    test_targets = torch.from_numpy(context.source.test.multilabels).float()  # (M, K)
    train_features, test_features = context.features("train"), context.features("test")
    l2 = choose_l2(train_features, train_targets, seed)
    train_x, test_x = (x.float() for x in standardise(train_features.double(), test_features.double()))
    weight, bias = fit_multilabel_logistic(train_x, train_targets, l2)
    logits = test_x @ weight + bias  # (M, K)
    per_class = per_class_average_precision(logits, test_targets)
    settings = {**context.base_settings(), "seed": seed, "l2": l2, "solver": "lbfgs", "classes": train_targets.shape[1],
                "classes_in_mAP": int((~per_class.isnan()).sum()), "threshold": 0.5,
                "per_class_ap": [None if np.isnan(value) else round(value * 100, 3) for value in per_class.tolist()],
                "validation": "10% of train, random, drawn by the seed"}
    metrics = [("mAP", float(per_class.nanmean()) * 100), ("subset_accuracy", subset_accuracy(logits, test_targets))]
    if rules:
        share, rule_settings = rule_results(logits, test_targets, rules)
        settings.update(rule_settings, rules_from=rules_origin)
        metrics.append(("rule_violations", share))
    seconds = time.perf_counter() - started
    return [EvalResult("multilabel", context.source.spec, metric, value, seconds, settings=settings,
                       backbone=context.target.label, higher_is_better=metric != "rule_violations")
            for metric, value in metrics]
