"""On small images SimCLR's crops keep at least 20 px a side, unless a crop scale is given (issue 9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pretrainlab.config import build_config
from pretrainlab.data.source import ImageSource
from pretrainlab.methods import METHODS
from pretrainlab.methods.parts.small_images import adapt_crops_to_image_size, small_image_crop_scale
from pretrainlab.pipeline import build_run_config, pretrain


@pytest.mark.parametrize("side, scale", [(28, 400 / 784), (32, 400 / 1024), (64, 400 / 4096), (224, 400 / 50176),
                                         (16, 1.0)])
def test_the_scale_is_the_crop_side_squared_over_the_image_area(side: int, scale: float) -> None:
    assert small_image_crop_scale(20, side) == pytest.approx(scale)
    if scale < 1:  # a crop of that area of a side x side image is 20 px a side
        assert (scale * side * side) ** 0.5 == pytest.approx(20)


def test_simclr_crops_are_raised_on_small_images_and_kept_on_large_ones() -> None:
    config = build_config(METHODS.get("simclr").config_class, {}, "simclr")
    side = METHODS.get("simclr").small_image_crop_side
    assert (config.views.crop_min_scale, side) == (0.08, 20)
    adapted, chosen = adapt_crops_to_image_size(config, {}, side, 28)
    assert adapted.views.crop_min_scale == 0.51 and chosen == {"views.crop_min_scale": 0.51}
    assert adapted.views.flip_p == config.views.flip_p  # nothing else changes
    kept, chosen = adapt_crops_to_image_size(config, {}, side, 96)  # 0.043 < 0.08: the paper's range stands
    assert kept is config and chosen == {}


def test_a_given_scale_and_a_method_that_does_not_opt_in_are_left_alone() -> None:
    options = {"views": {"crop_min_scale": 0.08}}
    config = build_config(METHODS.get("simclr").config_class, options, "simclr")
    assert adapt_crops_to_image_size(config, options, 20, 28) == (config, {})
    byol = build_config(METHODS.get("byol").config_class, {}, "byol")
    assert METHODS.get("byol").small_image_crop_side is None
    assert adapt_crops_to_image_size(byol, {}, None, 28) == (byol, {})


def test_a_simclr_run_on_digits_records_the_crop_it_chose(tmp_path: Path, builtin_source) -> None:
    source = ImageSource("builtin", builtin_source.train.subset(np.arange(64)), None, builtin_source.classes,
                         mirror_invariant=False)
    config = build_run_config("simclr", {"backbone": "tinycnn", "out": str(tmp_path / "run"), "img_size": 32},
                              {"epochs": 1, "batch_size": 32}, {"hidden_dim": 16, "projection_dim": 8})
    pretrain(config, show_progress=False, source=source)
    adapted = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["resolved"]["adapted_options"]
    # the decoded digits are 28 px (smaller than the 32-px training size): 20 px of 28
    assert adapted["views.crop_min_scale"] == 0.51 and adapted["views.flip_p"] == 0.0
    assert adapted["reason"] == ("the data is not mirror-invariant; crops keep at least 20 px a side of "
                                 "28-px images")


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_a_crop_scale_outside_0_1_is_one_line_and_exit_2_before_the_run_folder(value: str, tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture) -> None:
    from pretrainlab.cli import main

    out = tmp_path / "run"
    code = main(["pretrain", "--method", "simclr", "--backbone", "tinycnn", "--data", "builtin", "--epochs", "1",
                 "--option", f"views.crop_min_scale={value}", "--out", str(out)])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "crop_min_scale must be in (0, 1]" in error[0], error
    assert not out.exists()
