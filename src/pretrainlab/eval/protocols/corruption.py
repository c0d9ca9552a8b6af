"""Corruption robustness: a classifier trained on clean frozen features, tested on corrupted test images.

The ImageNet-C protocol (Hendrycks and Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", arXiv 1903.12261) for frozen backbones: the classifier (the linear
probe of eval/linear.py, or weighted kNN) sees only clean training features; each corruption of
eval/image_corruptions.py at each of its five severities is applied to the test images, which are
embedded again. Accuracy per corruption is the mean over severities (the paper's corruption accuracy).

Metrics, in percent: `top1@clean`; `top1@NAME` for each corruption; `top1@corrupted`, the mean over
corruptions; `relative@NAME` and `relative@corrupted`, each accuracy as a share of the clean one.
With classifier=knn every metric name starts with "knn_".

Options: classifier (linear | knn, default linear), corruptions (default all), max_test (a fixed
class-balanced subset of the test split, drawn with a fixed seed like the gauntlet's --max-test,
default 1000; 0 = all: every image is embedded 35 times), k and temperature for kNN, seed (the noise
draws and the probe's validation split).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pretrainlab.data.subsets import subset_indices
from pretrainlab.errors import PretrainlabError, unknown_name_message
from pretrainlab.eval.features import extract_features, normalisation
from pretrainlab.eval.image_corruptions import CORRUPTIONS, SEVERITIES, corrupt
from pretrainlab.eval.knn import default_k, knn_options, knn_predict
from pretrainlab.eval.linear import fit_linear_probe
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, takes_options
from pretrainlab.eval.record import EvalResult

CLASSIFIERS = ("linear", "knn")
DEFAULT_MAX_TEST = 1000
Predictor = Callable[[torch.Tensor], torch.Tensor]  # features (M, D) -> predicted classes (M,)


def read_corruptions(options: dict[str, Any]) -> list[str]:
    given = options.get("corruptions", list(CORRUPTIONS))
    names = [given] if isinstance(given, str) else [str(name) for name in given]
    for name in names:
        if name not in CORRUPTIONS:
            raise PretrainlabError(unknown_name_message("corruption", name, CORRUPTIONS))
    return names


def build_predictor(context: EvalContext, classifier: str, seed: int) -> tuple[Predictor, dict[str, Any]]:
    """The classifier fitted on clean training features, and its settings."""
    train_features, train_labels = context.features("train"), context.labels("train")
    num_classes = int(max(train_labels.max(), context.labels("test").max())) + 1
    if classifier == "linear":
        probe = fit_linear_probe(train_features, train_labels, num_classes, seed)
        return (lambda features: probe.logits(features).argmax(dim=1)), {"l2": probe.l2, "solver": "lbfgs"}
    k, temperature = knn_options(context.options)
    k = k or default_k(train_labels)
    return (lambda features: knn_predict(train_features, train_labels, features, k, temperature, num_classes)
            .argmax(dim=1)), {"k": k, "temperature": temperature}


def test_subset(context: EvalContext) -> np.ndarray:
    limit = int(context.options.get("max_test", DEFAULT_MAX_TEST))
    test = context.source.test
    if limit <= 0 or limit >= len(test):
        return np.arange(len(test))
    return subset_indices(test, limit)


def corrupted_accuracies(context: EvalContext, images: np.ndarray, labels: torch.Tensor, predict: Predictor,
                         names: list[str], seed: int, chunk: int = 512) -> dict[str, list[float]]:
    """{corruption: [top-1 % at severity 1..5]} of `predict` on the corrupted `images` (M, H, W, C) uint8."""
    mean, std = normalisation(context.target, context.source.train.images)
    accuracies: dict[str, list[float]] = {}
    for corruption_index, name in enumerate(names):
        accuracies[name] = []
        for severity in SEVERITIES:
            # One stream per (seed, corruption, severity): each measurement repeats on its own.
            generator = torch.Generator(device=context.device).manual_seed(seed * 1000 + corruption_index * 10
                                                                           + severity)
            corrupted = np.concatenate([
                corrupt(torch.from_numpy(images[start : start + chunk]).to(context.device), name, severity,
                        generator).cpu().numpy()
                for start in range(0, len(images), chunk)])
            features = extract_features(context.target, corrupted, mean, std, context.device)
            accuracies[name].append(float((predict(features) == labels).float().mean()) * 100)
    return accuracies


@PROTOCOLS.register("corruption")
@takes_options("corruptions", "k", "temperature", "max_test", "classifier")
def corruption_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    seed = int(context.options.get("seed", 0))
    classifier = str(context.options.get("classifier", "linear"))
    if classifier not in CLASSIFIERS:
        raise PretrainlabError(unknown_name_message("classifier", classifier, CLASSIFIERS))
    names = read_corruptions(context.options)
    kept = test_subset(context)
    labels = context.labels("test")[torch.from_numpy(kept)]
    predict, classifier_settings = build_predictor(context, classifier, seed)
    clean = float((predict(context.features("test")[torch.from_numpy(kept)]) == labels).float().mean()) * 100
    per_severity = corrupted_accuracies(context, context.source.test.images[kept], labels, predict, names, seed)
    per_corruption = {name: float(np.mean(values)) for name, values in per_severity.items()}
    corrupted = float(np.mean(list(per_corruption.values())))
    values = {"top1@clean": clean, **{f"top1@{name}": value for name, value in per_corruption.items()},
              "top1@corrupted": corrupted,
              **{f"relative@{name}": value / max(clean, 1e-9) * 100 for name, value in per_corruption.items()},
              "relative@corrupted": corrupted / max(clean, 1e-9) * 100}
    settings = {**context.base_settings(), "classifier": classifier, **classifier_settings, "seed": seed,
                "test_images_corrupted": len(kept), "severities": list(SEVERITIES),
                "parameters": "CIFAR-10-C (blur sigma scaled by side / 32)",
                "per_severity_top1": {name: [round(value, 3) for value in accs] for name, accs in per_severity.items()}}
    prefix = "" if classifier == "linear" else f"{classifier}_"
    seconds = time.perf_counter() - started
    return [EvalResult("corruption", context.source.spec, prefix + metric, value, seconds, settings=settings,
                       backbone=context.target.label) for metric, value in values.items()]
