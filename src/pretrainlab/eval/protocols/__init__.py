"""Transfer protocols by name: each takes a target and a labelled source and returns `EvalResult`s.

This package holds one file per protocol (registered by existing: every module here is imported at the
end of this file); the machinery they share (feature extraction, classifier training, probes, fine-tuning,
records) lives one level up in `pretrainlab.eval`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from pretrainlab.data.source import ImageSource
from pretrainlab.errors import PretrainlabError, refuse_unknown_options
from pretrainlab.eval.features import extract_features, normalisation
from pretrainlab.eval.knn import as_labels
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget
from pretrainlab.eval.token_targets import code_grid_reason
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


# Options every protocol takes: the seed (set by eval --seed and by the gauntlet for each of its seeds).
COMMON_OPTIONS = frozenset({"seed"})


def takes_options(*names: str) -> Callable[[Protocol], Protocol]:
    """Declares the option keys a protocol reads besides `seed`, e.g. `@takes_options("k", "temperature")`;
    `check_options` refuses keys no requested protocol reads instead of ignoring them silently."""

    def decorate(protocol: Protocol) -> Protocol:
        protocol.options = frozenset(names)  # type: ignore[attr-defined]
        return protocol

    return decorate


def check_options(protocols: Iterable[str], options: Mapping[str, Any]) -> None:
    """Refuses an option that none of `protocols` reads, naming the valid ones (a protocol that declares
    nothing, e.g. a new one, accepts any option)."""
    protocols = list(protocols)
    valid = set(COMMON_OPTIONS)
    for name in protocols:
        declared = getattr(PROTOCOLS.get(name), "options", None)
        if declared is None:
            return
        valid |= declared
    refuse_unknown_options(options, valid, f"none of the protocols {', '.join(protocols)}")


def skip_reason(protocol: str, source: ImageSource) -> str | None:
    """Why protocol `protocol` cannot run on `source`, or None when it can."""
    if (reason := code_grid_reason(protocol, source)) is not None:
        return reason
    return getattr(PROTOCOLS.get(protocol), "applies_to", needs_labels)(source)


def evaluate(context: EvalContext, protocol: str) -> list[EvalResult]:
    """Runs protocol `protocol` (its seed, if any, is `context.options["seed"]`) if the source has what it needs."""
    run = PROTOCOLS.get(protocol)
    check = getattr(run, "applies_to", None)
    if (reason := code_grid_reason(protocol, context.source)) is not None:
        raise PretrainlabError(f"protocol '{protocol}' {reason}")
    if check is None:
        context.source.require_labels(f"protocol '{protocol}'")
    elif (reason := check(context.source)) is not None:
        raise NotApplicable(f"protocol '{protocol}' {reason}")
    return run(context)


for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
