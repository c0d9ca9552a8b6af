"""The augmentation presets carry the papers' colour jitter, in the method defaults and in the packaged recipes."""

from __future__ import annotations

import pytest

from pretrainlab.config import build_config
from pretrainlab.methods import METHODS
from pretrainlab.methods.base import ViewOptions
from pretrainlab.pipeline import build_run_config

# (brightness, contrast, saturation, hue) of ColorJitter in each paper's augmentation, applied with p 0.8.
BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)  # BYOL table 6; MoCo v3 and DINO reuse it
SIMCLR_JITTER = (0.4, 0.4, 0.4, 0.1)  # SimCLR at strength 0.5, MoCo v2's


def jitter_of(options: ViewOptions) -> tuple[float, ...]:
    spec = options.spec(32)
    return tuple(round(value, 6) for value in (spec.brightness, spec.contrast, spec.saturation, spec.hue))


def view_options(method: str, from_recipe: bool) -> list[ViewOptions]:
    method_class = METHODS.get(method)
    recipe = build_run_config(method, {"data": "builtin", "out": "unused"}, {}, {}) if from_recipe else None
    values = recipe.method_options if recipe is not None else {}
    config = build_config(method_class.config_class, values, method)
    return [getattr(config, name) for name in ("views", "second_views", "local_views") if hasattr(config, name)]


@pytest.mark.parametrize("from_recipe", [False, True])
@pytest.mark.parametrize("method", ["byol", "mocov3", "dino"])
def test_byol_mocov3_and_dino_views_jitter_saturation_by_0_2(method: str, from_recipe: bool) -> None:
    views = view_options(method, from_recipe)
    assert len(views) >= 2
    for options in views:
        assert jitter_of(options) == BYOL_JITTER and options.jitter_p == 0.8


@pytest.mark.parametrize("method", ["mocov2", "simclr"])
def test_simclr_and_mocov2_keep_saturation_0_4(method: str) -> None:
    for from_recipe in (False, True):
        assert all(jitter_of(options) == SIMCLR_JITTER for options in view_options(method, from_recipe))


def test_saturation_is_checked() -> None:
    with pytest.raises(ValueError, match="saturation"):
        ViewOptions(saturation=-0.1)
