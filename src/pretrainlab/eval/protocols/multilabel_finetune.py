"""Multi-label fine-tuning: the whole backbone and a fresh head trained with binary cross-entropy, mAP on test.

The evaluation of the medical pre-training papers, which fine-tune rather than probe: "Delving into
Masked Autoencoders for Multi-Label Thorax Disease Classification" (Xiao, Bai, Yuille, Zhou, arXiv
2210.12843: ViT fine-tuning with layer-wise lr decay, RandAugment and drop-path, mean AUC over 14
findings) and "Self-Supervised Pre-Training with Contrastive and Masked Autoencoder Methods for Dealing
with Small Datasets in Deep Learning for Medical Imaging" (Wolf et al., arXiv 2308.06534: fine-tuning
on shrinking labelled subsets). Fine-tuning's recipe and options are eval/finetuning.py's (epochs, lr,
layer_decay, randaugment, drop_path, ...); the loss is one logistic regression per class on the
multi-hot targets (N, K), summed over classes, averaged over images, as the frozen multilabel probe.

`fractions` (default [1.0]) fine-tunes on random nested subsets of the training images drawn by the
seed (multi-label images have no single class to balance), each tested on the whole test split.
Metrics in percent: `mAP` (macro over classes with a positive test image) and `subset_accuracy`
(probability > 0.5 matches all K labels); with fractions, `mAP@10%`, `subset_accuracy@10%`, ...

Options: fractions, seed and fine-tuning's options.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.data.subsets import fraction_label, random_fraction_subset
from pretrainlab.eval.classifier_training import LossFunction, predict
from pretrainlab.eval.finetuning import FINETUNE_OPTIONS, FineTuning
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, applies_when, takes_options
from pretrainlab.eval.protocols.few_labels import read_fractions
from pretrainlab.eval.protocols.multilabel import needs_multilabels, per_class_average_precision, subset_accuracy
from pretrainlab.eval.record import EvalResult


def binary_cross_entropy(targets: torch.Tensor) -> LossFunction:
    """BCE of model(inputs) (B, K) against the multi-hot `targets[indices]` ((N, K) float on the device)."""

    def loss(model: nn.Module, inputs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        logits = model(inputs)  # (B, K)
        return F.binary_cross_entropy_with_logits(logits, targets[indices], reduction="sum") / len(logits)

    return loss


def finetune_multilabel(tuning: FineTuning, images: np.ndarray, multilabels: np.ndarray,
                        seed: int) -> nn.Module:
    """A copy of the backbone + a K-output head fine-tuned on `images` (N, H, W, C) and `multilabels` (N, K)."""
    targets = torch.as_tensor(np.asarray(multilabels, dtype=np.float32), device=tuning.context.device)
    model = tuning.new_model(seed, num_outputs=targets.shape[1])
    tuning.train(model, images, binary_cross_entropy(targets), seed)
    return model


def test_scores(tuning: FineTuning, model: nn.Module) -> tuple[float, float, list]:
    """(mAP, subset accuracy, per-class AP) of `model` on the test split, in percent."""
    test = tuning.context.source.test
    logits = predict(model, tuning.inputs(test.images))  # (M, K)
    targets = torch.from_numpy(test.multilabels).float()  # (M, K)
    per_class = per_class_average_precision(logits, targets)
    ap = [None if np.isnan(value) else round(value * 100, 3) for value in per_class.tolist()]
    return float(per_class.nanmean()) * 100, subset_accuracy(logits, targets), ap


@PROTOCOLS.register("multilabel_finetune")
@takes_options("fractions", *FINETUNE_OPTIONS)
@applies_when(needs_multilabels)
def multilabel_finetune(context: EvalContext) -> list[EvalResult]:
    seed = int(context.options.get("seed", 0))
    fractions = read_fractions({"fractions": context.options.get("fractions", [1.0])})
    tuning = FineTuning(context)  # every option checked before any training
    train = context.source.train
    subsets = [(fraction, random_fraction_subset(len(train), fraction, seed)) for fraction in fractions]
    suffix = (lambda fraction: "") if context.options.get("fractions") is None else (
        lambda fraction: f"@{fraction_label(fraction)}")
    results = []
    for fraction, subset in subsets:
        started = time.perf_counter()
        model = finetune_multilabel(tuning, train.images[subset], train.multilabels[subset], seed)
        mean_ap, exact, per_class = test_scores(tuning, model)
        settings: dict[str, Any] = {
            **context.base_settings(), **tuning.describe(len(subset)), "seed": seed, "fraction": fraction,
            "labelled_images": len(subset), "subset": "random, nested across fractions, drawn by the seed",
            "loss": "binary cross-entropy per class", "threshold": 0.5, "per_class_ap": per_class}
        seconds = time.perf_counter() - started
        results += [EvalResult("multilabel_finetune", context.source.spec, metric + suffix(fraction), value, seconds,
                               settings=settings, backbone=context.target.label)
                    for metric, value in (("mAP", mean_ap), ("subset_accuracy", exact))]
    return results
