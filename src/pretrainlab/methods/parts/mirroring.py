"""Horizontal flips only where a mirrored image still shows its class.

SimCLR's views flip half the images, which teaches invariance to mirroring. On digits that invariance is
wrong (a mirrored 2, 3 or 7 is no digit), and on `builtin` it was the largest single cost measured in
issue 9: resnet18, 3 epochs, crop scale (0.8, 1): online kNN 83.2 % with flips against 90.9 % without
(docs/resnet_recipes.md). So a source that says it is not mirror-invariant (`ImageSource.mirror_invariant`)
gets views without flips, unless the user or the recipe gave a flip probability; the run's config.yaml
records what was chosen.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from pretrainlab.methods.base import ViewOptions


def view_option_fields(config: Any) -> list[str]:
    """Names of the fields of a method's config dataclass that hold `ViewOptions`."""
    hints = typing.get_type_hints(type(config))
    return [field.name for field in dataclasses.fields(config) if hints.get(field.name) is ViewOptions]


def adapt_view_option(config: Any, options: dict[str, Any], key: str,
                      choose: Callable[[ViewOptions], Any]) -> tuple[Any, dict[str, Any]]:
    """`config` with `key` set to `choose(views)` in every `ViewOptions` field where `options` does not set `key`
    (the user's or the recipe's choice stands) and `choose` returns a value other than the current one (None:
    keep); returns it and {"<field>.<key>": value} for what was changed."""
    changes, chosen = {}, {}
    for name in view_option_fields(config):
        given = options.get(name)
        if isinstance(given, dict) and key in given:
            continue
        views = getattr(config, name)
        value = choose(views)
        if value is not None and value != getattr(views, key):
            changes[name] = dataclasses.replace(views, **{key: value})
            chosen[f"{name}.{key}"] = value
    return (dataclasses.replace(config, **changes) if changes else config), chosen


def adapt_mirroring(config: Any, options: dict[str, Any], mirror_invariant: bool) -> tuple[Any, dict[str, float]]:
    """`config` with flip_p 0 in every `ViewOptions` field whose flip_p `options` does not set, when the data is
    not mirror-invariant; returns it and {"<field>.flip_p": 0.0} for what was changed (empty otherwise)."""
    if mirror_invariant or not dataclasses.is_dataclass(config):
        return config, {}
    return adapt_view_option(config, options, "flip_p", lambda views: 0.0 if views.flip_p > 0 else None)
