"""Random-resized crops that keep enough of a small image to show what it is.

A crop of scale s of an image of side L pixels has about sqrt(s) * L pixels on a side: SimCLR's ImageNet
scale range (0.08, 1) takes 63-px patches of a 224-px photo, but 8-px patches of a 28-px digit, often a
single stroke or background, and on small data those views cost more than they teach in a short run
(issue 9, docs/resnet_recipes.md). So a method that opts in (`Method.small_image_crop_side`, in pixels) has
its lower crop scale raised to (side / L) ** 2 when that is larger, L being the smaller of the decoded image
side and the training size; the user's or the recipe's own `crop_min_scale` stands, and config.yaml records
what was chosen.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pretrainlab.methods.parts.mirroring import adapt_view_option


def small_image_crop_scale(crop_side: int, image_side: int) -> float:
    """The lower crop scale whose crops keep at least `crop_side` of an `image_side`-px image's pixels a side."""
    return min(1.0, (crop_side / image_side) ** 2)


def adapt_crops_to_image_size(config: Any, options: dict[str, Any], crop_side: int | None,
                              image_side: int) -> tuple[Any, dict[str, float]]:
    """`config` with every `ViewOptions` field's crop_min_scale raised to keep `crop_side` px a side of an
    `image_side`-px image, where `options` does not set it; returns it and {"<field>.crop_min_scale": value}
    for what was changed (empty when nothing was, or the method does not opt in)."""
    if not crop_side or not dataclasses.is_dataclass(config):
        return config, {}
    floor = round(small_image_crop_scale(crop_side, image_side), 3)
    return adapt_view_option(config, options, "crop_min_scale",
                             lambda views: floor if views.crop_min_scale < floor else None)
