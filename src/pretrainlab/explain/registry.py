"""Analyses by name: each takes an `ExplainContext`, writes arrays and figures, and returns summary records.

`explain/analyses/` holds one file per analysis, registered by existing (as eval/protocols/). An analysis
declares what it needs of the backbone (`register_analysis(..., needs=...)`), so a bad request (attention maps
of a CNN) fails before any work with one line saying why, and the `--option` keys it reads, so a misspelt one
fails too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pretrainlab.backbones import Backbone
from pretrainlab.errors import PretrainlabError, refuse_unknown_options
from pretrainlab.eval.record import EvalResult
from pretrainlab.explain.context import ExplainContext
from pretrainlab.registry import Registry


@dataclass
class AnalysisOutput:
    """results: one record per summary metric; files: the arrays (.npz) and figures (.png) written."""

    results: list[EvalResult] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


Analysis = Callable[[ExplainContext], AnalysisOutput]
ANALYSES: Registry[Analysis] = Registry("analysis name")
BackboneCheck = Callable[[Backbone], str | None]


def register_analysis(name: str, options: tuple[str, ...] = (),
                      needs: BackboneCheck | None = None) -> Callable[[Analysis], Analysis]:
    """Registers an analysis under `name`, with the `--option` keys it reads and what it needs of the backbone
    (needs(backbone) -> why not, or None)."""

    def decorate(analysis: Analysis) -> Analysis:
        analysis.options = tuple(options)  # type: ignore[attr-defined]
        analysis.backbone_check = needs  # type: ignore[attr-defined]
        return ANALYSES.register(name)(analysis)

    return decorate


def tokens_needed(backbone: Backbone) -> str | None:
    return None if backbone.has_tokens else (f"needs a vision transformer (attention layers), and '{backbone.name}' "
                                             "is convolutional; try cam, filters or cka")


def convolutions_needed(backbone: Backbone) -> str | None:
    import torch.nn as nn

    has_3x3 = any(isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3) for m in backbone.modules())
    return None if has_3x3 else f"needs 3x3 convolutions, and '{backbone.name}' has none"


def skip_reason(name: str, backbone: Backbone) -> str | None:
    check = getattr(ANALYSES.get(name), "backbone_check", None)
    return None if check is None else check(backbone)


def check_options(names: list[str], options: dict[str, object]) -> None:
    """An option no requested analysis reads is a typo: it fails with the valid ones."""
    valid = {option for name in names for option in getattr(ANALYSES.get(name), "options", ())}
    refuse_unknown_options(options, valid, f"none of the analyses {', '.join(names)}")


def check_analyses(names: list[str], backbone: Backbone) -> None:
    """Unknown names and analyses that cannot apply to the backbone fail here, before any work."""
    if not names:
        raise PretrainlabError(f"no analysis given; valid analyses: {', '.join(ANALYSES.names())}")
    for name in names:
        ANALYSES.get(name)
    for name in names:
        if (reason := skip_reason(name, backbone)) is not None:
            raise PretrainlabError(f"analysis '{name}' {reason}; valid analyses: {', '.join(ANALYSES.names())}")


def run_analysis(context: ExplainContext, name: str) -> AnalysisOutput:
    check_analyses([name], context.backbone)
    return ANALYSES.get(name)(context)
