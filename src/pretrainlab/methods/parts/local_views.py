"""Multi-crop local views only where the backbone can see them.

DINO and SwAV add small local crops (96 of 224 px in their papers) whose representations must match the
global views'. On ImageNet a 96-px crop leaves a stride-32 ResNet's last stage 3x3 cells. At 28 px the
papers' ratio gives 12-px crops, under half of one cell of timm's resnet18 (output stride 32): most of what
its deeper stages see is zero padding. There DINO's loss stays at ln K (the uniform output) through training,
and turning the local views off gained 2.0 kNN / 1.5 linear points at the methods table's budget
(docs/methods.md, issue 9). So where a CNN's output stride is larger than the local views' side, a method that
opts in (`Method.local_view_count_option`) gets no local views, unless the user or the recipe gave their
number; config.yaml records what was chosen. Vision transformers snap local views to whole patches, so they
always keep them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pretrainlab.backbones import Backbone

PAPERS_LOCAL_SHARE = 96 / 224  # local view side / global view side in DINO and SwAV


def local_view_side(local_size: int, img_size: int, patch: int = 1) -> int:
    """The local views' side in px: `local_size` when set, else the papers' share of the training size in whole
    patches (`patch` 1 for CNNs), at least 4 px."""
    return local_size or max(4, patch, round(img_size * PAPERS_LOCAL_SHARE / patch) * patch)


def adapt_local_views(config: Any, options: dict[str, Any], count_option: str | None, backbone: Backbone,
                      img_size: int) -> tuple[Any, dict[str, Any], str]:
    """`config` with `count_option` set to 0 when its local views would be narrower than the backbone's
    output stride and `options` does not set it; returns it, {count_option: 0} when changed, and the reason."""
    if not count_option or count_option in options or backbone.has_tokens or not dataclasses.is_dataclass(config):
        return config, {}, ""
    stride, side = backbone.output_stride, local_view_side(getattr(config, "local_size", 0), img_size)
    if not getattr(config, count_option) or stride is None or side >= stride:
        return config, {}, ""
    reason = f"{side}-px local views are narrower than {backbone.name}'s output stride of {stride} px"
    return dataclasses.replace(config, **{count_option: 0}), {count_option: 0}, reason
