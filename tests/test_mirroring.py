"""Views skip horizontal flips on data that a mirror changes (digits), unless a flip probability is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from pretrainlab.config import build_config
from pretrainlab.data.source import ImageSource
from pretrainlab.methods import METHODS
from pretrainlab.methods.parts.mirroring import adapt_mirroring
from pretrainlab.pipeline import build_run_config, pretrain


def simclr_config(options: dict):
    return build_config(METHODS.get("simclr").config_class, options, "simclr")


def test_flips_dropped_only_where_the_data_is_not_mirror_invariant() -> None:
    config = simclr_config({})
    assert config.views.flip_p == 0.5
    kept, chosen = adapt_mirroring(config, {}, mirror_invariant=True)
    assert kept is config and chosen == {}
    adapted, chosen = adapt_mirroring(config, {}, mirror_invariant=False)
    assert adapted.views.flip_p == 0.0 and chosen == {"views.flip_p": 0.0}
    assert adapted.views.crop_min_scale == config.views.crop_min_scale  # nothing else changes


def test_a_given_flip_probability_stands() -> None:
    options = {"views": {"flip_p": 0.3}}
    config = simclr_config(options)
    adapted, chosen = adapt_mirroring(config, options, mirror_invariant=False)
    assert adapted.views.flip_p == 0.3 and chosen == {}


def test_every_view_kind_of_a_method_is_adapted() -> None:
    config = build_config(METHODS.get("byol").config_class, {}, "byol")
    adapted, chosen = adapt_mirroring(config, {}, mirror_invariant=False)
    assert adapted.views.flip_p == 0.0 and adapted.second_views.flip_p == 0.0
    assert set(chosen) == {"views.flip_p", "second_views.flip_p"}


def test_builtin_digits_are_not_mirror_invariant_and_the_run_records_the_choice(tmp_path: Path,
                                                                                 builtin_source) -> None:
    assert builtin_source.mirror_invariant is False
    source = ImageSource("builtin", builtin_source.train.subset(np.arange(64)), None, builtin_source.classes,
                         mirror_invariant=False)
    config = build_run_config("simclr", {"backbone": "tinycnn", "out": str(tmp_path / "run")},
                              {"epochs": 1, "batch_size": 32}, {"hidden_dim": 16, "projection_dim": 8})
    pretrain(config, show_progress=False, source=source)
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["resolved"]
    assert resolved["adapted_options"]["views.flip_p"] == 0.0
