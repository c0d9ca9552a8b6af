"""Fooling rates of a universal perturbation or patch on downstream heads the attack never saw.

The fooling rate is the share of test images whose predicted class changes when the perturbation is added
(Moosavi-Dezfooli et al., "Universal adversarial perturbations", arXiv 1610.08401; AdvEncoder reports the
same). Heads: weighted kNN and the linear probe on frozen features, a fine-tuned copy of the backbone, a probe
fitted on another dataset, and a probe on another backbone (transfer). Each is compared with random noise of
the same norm and a random patch at the same place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pretrainlab.attack.figures import MAGNIFY, ImageRow, magnified
from pretrainlab.attack.input_space import eps_label
from pretrainlab.attack.model import build_subject, pixels, predict, probe_subject
from pretrainlab.attack.universal import FeatureModel, UniversalAttack, random_counterpart
from pretrainlab.data.source import ImageSource
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.features import extract_features, normalisation
from pretrainlab.eval.knn import as_labels, default_k, knn_predict
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget

Predictor = Callable[[torch.Tensor], torch.Tensor]  # pixels (M, C, S, S) in [0, 1] -> predicted classes (M,)


@dataclass
class Downstream:
    """A head the attack never saw. Args: name (e.g. "linear", "transfer:timm:resnet18/linear"); predict; images:
    its own test pixels (M, C, S, S) and labels (M,)."""

    name: str
    predict: Predictor
    images: torch.Tensor
    labels: torch.Tensor


def knn_predictor(target: EvalTarget, source: ImageSource, device: torch.device, batch_size: int = 256) -> Predictor:
    """Weighted kNN (eval/knn.py) over the clean training features of `source`."""
    mean, std = normalisation(target, source.train.images)
    train = extract_features(target, source.train.images, mean, std, device)
    train_labels = as_labels(source.train.labels)
    encoder = FeatureModel(target.backbone, mean, std).to(device).eval()
    k = default_k(train_labels)

    @torch.no_grad()
    def run(images: torch.Tensor) -> torch.Tensor:
        features = torch.cat([encoder(images[start : start + batch_size].to(device)).float().cpu()
                              for start in range(0, len(images), batch_size)])
        return knn_predict(train, train_labels, features, k).argmax(1)

    return run


def classifier_predictor(model: torch.nn.Module) -> Predictor:
    return lambda images: predict(model, images)


def held_out_pixels(target: EvalTarget, source: ImageSource, max_test: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    from pretrainlab.attack.evaluation import test_images

    images, labels, _ = test_images(target, source.test, max_test)
    return images, labels


def build_downstreams(target: EvalTarget, source: ImageSource, device: torch.device, heads: list[str],
                      options: dict[str, Any], seed: int, max_test: int | None,
                      other_source: ImageSource | None = None,
                      transfer_target: EvalTarget | None = None) -> list[Downstream]:
    """The heads to measure: any of knn, linear, finetune on `source`, plus a probe on `other_source` and a probe on
    `transfer_target` when given."""
    images, labels = held_out_pixels(target, source, max_test)
    downstreams = []
    for head in heads:
        if head == "knn":
            downstreams.append(Downstream("knn", knn_predictor(target, source, device), images, labels))
        elif head in ("linear", "finetune"):
            subject = build_subject(target, source, device, head, options, seed)
            downstreams.append(Downstream(head, classifier_predictor(subject.model), images, labels))
        else:
            raise PretrainlabError(f"unknown downstream head '{head}' for the universal attack; valid: knn, linear, "
                                   "finetune")
    if other_source is not None:
        other_images, other_labels = held_out_pixels(target, other_source, max_test)
        subject = probe_subject(target, other_source, device, seed)
        downstreams.append(Downstream(f"linear:{other_source.spec}", classifier_predictor(subject.model),
                                      other_images, other_labels))
    if transfer_target is not None:
        if (transfer_target.img_size, transfer_target.in_chans) != (target.img_size, target.in_chans):
            raise PretrainlabError(f"transfer backbone '{transfer_target.label}' takes {transfer_target.img_size} px "
                                   f"x {transfer_target.in_chans} channels, the attacked one {target.img_size} px x "
                                   f"{target.in_chans}; give one with the same input")
        subject = probe_subject(transfer_target, source, device, seed)
        downstreams.append(Downstream(f"transfer:{transfer_target.label}/linear", classifier_predictor(subject.model),
                                      images, labels))
    return downstreams


def fooling_rate(run: Predictor, images: torch.Tensor, change: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Percent of images (M, C, S, S) whose prediction differs after `change`."""
    return float((run(change(images)) != run(images)).float().mean()) * 100


def universal_records(attack: UniversalAttack, downstreams: list[Downstream], eps: float, fraction: float,
                      seed: int, data: str, backbone: str, settings: dict[str, Any]) -> list[EvalResult]:
    """Fooling rate of the perturbation, the patch and their random counterparts on every head (lower is better
    for the backbone, so higher_is_better is False)."""
    noise = random_counterpart(attack, eps, seed)
    size = f"{fraction * 100:g}%"
    kinds = {f"perturbation_{eps_label(eps)}": attack.perturb, f"noise_{eps_label(eps)}": noise.perturb,
             f"patch_{size}": attack.paste, f"noise_patch_{size}": noise.paste}
    records = []
    for downstream in downstreams:
        clean = float((downstream.predict(downstream.images) == downstream.labels).float().mean()) * 100
        for kind, change in kinds.items():
            started = time.perf_counter()
            value = fooling_rate(downstream.predict, downstream.images, change)
            accuracy = float((downstream.predict(change(downstream.images)) == downstream.labels).float().mean()) * 100
            records.append(EvalResult("universal", data, f"{kind}@{downstream.name}", value,
                                      time.perf_counter() - started, higher_is_better=False, backbone=backbone,
                                      settings={**settings, "head_clean_top1": clean, "top1_after": accuracy,
                                                "images": len(downstream.images), "seed": seed,
                                                "metric": "fooling rate: % of predictions that change"}))
    return records


def universal_pixels(target: EvalTarget, source: ImageSource, limit: int) -> torch.Tensor:
    """The surrogate set: up to `limit` training images as pixels; their labels are never read."""
    step = max(1, len(source.train) // limit)
    return pixels(target, source.train.images[::step][:limit])


def universal_figure_rows(attack: UniversalAttack, downstream: Downstream, eps: float, seed: int,
                          count: int = 10) -> list[ImageRow]:
    """Clean, perturbed, the perturbation x10, patched and same-norm noise rows; captions = the head's predictions."""
    images, labels = downstream.images[:count], downstream.labels[:count]
    noise = random_counterpart(attack, eps, seed)
    rows = []
    for label, changed in (("clean", images), ("universal perturbation", attack.perturb(images)),
                           ("universal patch", attack.paste(images)), ("random noise", noise.perturb(images))):
        predicted = downstream.predict(changed)
        rows.append(ImageRow(label, changed, [f"pred {int(p)}" for p in predicted], predicted != labels))
    rows.insert(2, ImageRow(f"perturbation x{MAGNIFY:g}", magnified(attack.perturbation)))
    return rows
