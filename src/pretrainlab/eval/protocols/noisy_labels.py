"""Noisy labels: how well a backbone's features survive wrong training labels, with and without ELR,
and NMTune's black-box tuning against a plain linear probe.

Metrics (top-1 % on the clean test split):
- `top1@clean`: a linear head trained on the clean labels (the reference);
- `top1@sym40%`, `top1@asym20%`, ...: the same head trained on noisy labels (`label_noise.py` says how
  the noise is drawn: an exact share of each class, symmetric or pair-flipped to the next class);
- `top1@sym40%+elr`, ...: the same, with Early-Learning Regularization (arXiv 2007.00151, `elr.py`);
- `top1@nmtune` and `top1@mlp`: NMTune (arXiv 2309.17002, `nmtune.py`) and the same MLP without its
  regularisers, both on the clean labels (NMTune targets noise in the pre-training data, not here).

`mode: frozen` (the default) trains heads on frozen, standardised features: the whole protocol (13
trainings) takes seconds on 2 CPU cores once the features are extracted. `mode: finetune` fine-tunes
the backbone for the clean, noisy and ELR runs instead (fine-tuning's options apply), which is what
the ELR paper measures and costs 11 fine-tunings; NMTune is black-box and always uses frozen features.

Options: mode, noise (default [sym20, sym40, sym60, asym20, asym40]), elr_beta, elr_lambda (the
paper's CIFAR-10 values 0.7 and 3 by default), head_epochs, head_lr, head_batch_size,
head_weight_decay (frozen heads), seed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pretrainlab.data.label_noise import noisy_labels, parse_noise
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.classifier_training import (
    FeatureInputs,
    LossFunction,
    TrainingSettings,
    cross_entropy,
    fit,
    predict,
    seeded,
    top1,
)
from pretrainlab.eval.elr import PAPER_BETA, PAPER_LAMBDA, EarlyLearningRegularization
from pretrainlab.eval.finetuning import FINETUNE_OPTIONS, FineTuning
from pretrainlab.eval.linear import standardise
from pretrainlab.eval.nmtune import FeatureMLPClassifier, NMTuneWeights, nmtune_loss
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, takes_options
from pretrainlab.eval.record import EvalResult

DEFAULT_NOISE = ("sym20", "sym40", "sym60", "asym20", "asym40")
MODES = ("frozen", "finetune")
# A linear head on a few thousand standardised features: cheap, so train it to convergence.
HEAD_DEFAULTS = {"epochs": 30, "lr": 1e-2, "batch_size": 128, "weight_decay": 1e-4, "min_steps": 300,
                 "warmup_fraction": 0.0}


class FrozenFeatureHeads:
    """Trains small heads on the context's frozen features (standardised with the training statistics)."""

    def __init__(self, context: EvalContext) -> None:
        self.context = context
        self.settings = TrainingSettings.from_options(context.options, prefix="head_", **HEAD_DEFAULTS)
        train, test = standardise(context.features("train").double(), context.features("test").double())
        self.train_inputs = FeatureInputs(train.float(), context.device)
        self.test_inputs = FeatureInputs(test.float(), context.device)
        self.num_classes = int(max(context.labels("train").max(), context.labels("test").max())) + 1

    def new_linear(self, seed: int) -> nn.Module:
        with seeded(seed, self.context.device):
            return nn.Linear(self.train_inputs.features.shape[1], self.num_classes)

    def new_mlp(self, seed: int) -> FeatureMLPClassifier:
        with seeded(seed, self.context.device):
            return FeatureMLPClassifier(self.train_inputs.features.shape[1], self.num_classes)

    def accuracy(self, model: nn.Module, loss: LossFunction, seed: int) -> float:
        fit(model, self.train_inputs, loss, self.settings, self.context.device, seed)
        return top1(predict(model, self.test_inputs), self.context.labels("test"))

    def describe(self) -> dict[str, Any]:
        settings = self.settings
        return {"head": "linear on standardised frozen features", "head_epochs": settings.epochs,
                "head_lr": settings.lr, "head_batch_size": settings.batch_size, "optimizer": settings.optimizer}


class FineTunedModels:
    """The same interface, fine-tuning the whole backbone (`mode: finetune`)."""

    def __init__(self, context: EvalContext) -> None:
        self.tuning = FineTuning(context)
        self.num_classes = self.tuning.num_classes
        self.images = context.source.train.images

    def new_linear(self, seed: int) -> nn.Module:
        return self.tuning.new_model(seed)

    def accuracy(self, model: nn.Module, loss: LossFunction, seed: int) -> float:
        self.tuning.train(model, self.images, loss, seed)
        return self.tuning.test_top1(model)

    def describe(self) -> dict[str, Any]:
        return {"head": "fine-tuned backbone + linear head", **self.tuning.describe(len(self.images))}


def read_noise(options: dict[str, Any]) -> list[tuple[str, float]]:
    given = options.get("noise", DEFAULT_NOISE)
    return [parse_noise(name) for name in ([given] if isinstance(given, str) else given)]


@PROTOCOLS.register("noisy_labels")
@takes_options("noise", "mode", "elr_beta", "elr_lambda", *TrainingSettings.option_names("head_"),
               *FINETUNE_OPTIONS)
def noisy_labels_protocol(context: EvalContext) -> list[EvalResult]:
    """Top-1 with clean, noisy and ELR-regularised training labels, and NMTune against a linear probe."""
    seed = int(context.options.get("seed", 0))
    mode = str(context.options.get("mode", "frozen"))
    if mode not in MODES:
        raise PretrainlabError(f"noisy_labels mode must be one of {', '.join(MODES)}, got {mode!r}")
    beta = float(context.options.get("elr_beta", PAPER_BETA))
    strength = float(context.options.get("elr_lambda", PAPER_LAMBDA))
    settings = read_noise(context.options)
    frozen = FrozenFeatureHeads(context)
    runner = frozen if mode == "frozen" else FineTunedModels(context)
    device, clean = context.device, context.source.train.labels
    results: list[EvalResult] = []

    def run(metric: str, trainer: FrozenFeatureHeads | FineTunedModels, model: nn.Module, loss: LossFunction,
            extra: dict[str, Any]) -> None:
        started = time.perf_counter()
        value = trainer.accuracy(model, loss, seed)
        results.append(EvalResult("noisy_labels", context.source.spec, metric, value, time.perf_counter() - started,
                                  settings={**context.base_settings(), "mode": mode, **trainer.describe(), **extra,
                                            "seed": seed}, backbone=context.target.label))

    def as_tensor(labels: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(labels, dtype=torch.int64, device=device)

    run("top1@clean", runner, runner.new_linear(seed), cross_entropy(as_tensor(clean)), {})
    for kind, rate in settings:
        noisy = noisy_labels(clean, kind, rate, runner.num_classes, seed)
        name = f"{kind}{rate * 100:g}%"
        details = {"noise": kind, "noise_rate": rate, "wrong_labels": float((noisy != clean).mean())}
        run(f"top1@{name}", runner, runner.new_linear(seed), cross_entropy(as_tensor(noisy)), details)
        elr = EarlyLearningRegularization(as_tensor(noisy), runner.num_classes, beta, strength)
        run(f"top1@{name}+elr", runner, runner.new_linear(seed), elr, {**details, "elr_beta": beta,
                                                                        "elr_lambda": strength})
    weights = NMTuneWeights()
    run("top1@nmtune", frozen, frozen.new_mlp(seed), nmtune_loss(as_tensor(clean), weights),
        {"nmtune_weights": vars(weights), "mlp": "D -> 4D -> D", "labels": "clean"})
    run("top1@mlp", frozen, frozen.new_mlp(seed), cross_entropy(as_tensor(clean)),
        {"mlp": "D -> 4D -> D, no regularisers", "labels": "clean"})
    return results
