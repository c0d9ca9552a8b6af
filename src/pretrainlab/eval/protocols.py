"""Transfer protocols by name: each takes a target and a labelled source and returns an `EvalResult`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pretrainlab.data.source import ImageSource
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.features import extract_features, normalisation
from pretrainlab.eval.knn import DEFAULT_TEMPERATURE, as_labels, knn_accuracy
from pretrainlab.eval.linear import linear_probe_accuracy
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget
from pretrainlab.registry import Registry


@dataclass
class EvalContext:
    """Shared by the protocols of one evaluation: frozen features are extracted once per target and split."""

    target: EvalTarget
    source: ImageSource
    device: torch.device
    options: dict[str, Any] = field(default_factory=dict)
    _features: dict[str, torch.Tensor] = field(default_factory=dict)

    def features(self, split: str) -> torch.Tensor:
        if split not in self._features:
            mean, std = normalisation(self.target, self.source.train.images)
            images = getattr(self.source, split).images
            self._features[split] = extract_features(self.target, images, mean, std, self.device)
        return self._features[split]

    def labels(self, split: str) -> torch.Tensor:
        return as_labels(getattr(self.source, split).labels)

    def base_settings(self) -> dict[str, Any]:
        return {"img_size": self.target.img_size, "split": self.source.split_note,
                "train_images": len(self.source.train), "test_images": len(self.source.test)}


# A protocol returns one record per metric it measures (e.g. recall@1 and recall@5, or one per label fraction).
# (protocol, metric) names one number across backbones: put variants in the metric name, e.g. "top1@10%".
Protocol = Callable[[EvalContext], list[EvalResult]]
PROTOCOLS: Registry[Protocol] = Registry("protocol")

# Why a protocol cannot run on a source (None: it can). Undeclared protocols need labels.
ApplicabilityCheck = Callable[[ImageSource], str | None]


class NotApplicable(PretrainlabError):
    """The data lacks what a protocol needs (labels, masks, several labels per image); the gauntlet skips it."""


def needs_labels(source: ImageSource) -> str | None:
    return None if source.labelled else f"needs labels, but dataset '{source.spec}' is unlabeled"


def needs_nothing(source: ImageSource) -> str | None:
    return None


def applies_when(check: ApplicabilityCheck) -> Callable[[Protocol], Protocol]:
    """Declares what a protocol needs from the source, e.g. `@applies_when(needs_nothing)` for speed.

    A protocol that finds out only while running that the data lacks something raises `NotApplicable`.
    """

    def decorate(protocol: Protocol) -> Protocol:
        protocol.applies_to = check  # type: ignore[attr-defined]
        return protocol

    return decorate


def skip_reason(protocol: str, source: ImageSource) -> str | None:
    """Why protocol `protocol` cannot run on `source`, or None when it can."""
    return getattr(PROTOCOLS.get(protocol), "applies_to", needs_labels)(source)


@PROTOCOLS.register("knn")
def knn_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    k = context.options.get("k")
    temperature = context.options.get("temperature", DEFAULT_TEMPERATURE)
    accuracy, used_k = knn_accuracy(context.features("train"), context.labels("train"), context.features("test"),
                                    context.labels("test"), k, temperature)
    return [EvalResult("knn", context.source.spec, "top1", accuracy, time.perf_counter() - started,
                       settings={**context.base_settings(), "k": used_k, "temperature": temperature,
                                 "deterministic": True},  # no randomness: the spread over seeds is 0
                       backbone=context.target.label)]


@PROTOCOLS.register("linear")
def linear_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    seed = int(context.options.get("seed", 0))
    accuracy, l2 = linear_probe_accuracy(context.features("train"), context.labels("train"),
                                         context.features("test"), context.labels("test"), seed)
    return [EvalResult("linear", context.source.spec, "top1", accuracy, time.perf_counter() - started,
                       settings={**context.base_settings(), "l2": l2, "solver": "lbfgs", "seed": seed,
                                 "validation": "10% of train, stratified, drawn by the seed"},
                       backbone=context.target.label)]


def evaluate(context: EvalContext, protocol: str) -> list[EvalResult]:
    """Runs protocol `protocol` (its seed, if any, is `context.options["seed"]`) if the source has what it needs."""
    run = PROTOCOLS.get(protocol)
    check = getattr(run, "applies_to", None)
    if check is None:
        context.source.require_labels(f"protocol '{protocol}'")
    elif (reason := check(context.source)) is not None:
        raise NotApplicable(f"protocol '{protocol}' {reason}")
    return run(context)
