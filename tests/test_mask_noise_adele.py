"""Noisy masks (data/mask_noise.py) on hand-checkable masks, ADELE's onset detector on constructed IoU curves,
and the dense protocol's noise and ADELE options end to end, bad values included."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from pretrainlab.cli import main
from pretrainlab.data.mask_noise import apply_mask_noise, parse_mask_noise
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.adele import iou_curve, memorisation_onset


def noisy(mask: np.ndarray, spec: str, num_classes: int = 3, seed: int = 0) -> np.ndarray:
    return apply_mask_noise(mask[None], parse_mask_noise(spec), num_classes, seed)[0]


def square(size: int, top: int, left: int, side: int, value: int, mask: np.ndarray | None = None) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8) if mask is None else mask
    mask[top : top + side, left : left + side] = value
    return mask


def test_dilation_grows_each_object_by_its_radius_over_background_only() -> None:
    assert (noisy(square(9, 3, 3, 3, 1), "dilate:1") == square(9, 2, 2, 5, 1)).all()  # 3x3 -> 5x5
    two = square(12, 4, 0, 3, 2, square(12, 4, 3, 3, 1))  # class 2 at columns 0-2 touches class 1 at 3-5
    grown = noisy(two, "dilate:1")
    assert (grown[4:7, 0:3] == 2).all() and (grown[4:7, 3:6] == 1).all()  # neither covers the other
    assert grown[4:7, 6].tolist() == [1, 1, 1] and (grown[3, 0:7] > 0).all()


def test_erosion_shrinks_each_object_and_frees_background() -> None:
    assert (noisy(square(9, 2, 2, 5, 1), "erode:1") == square(9, 3, 3, 3, 1)).all()  # 5x5 -> 3x3
    assert (noisy(square(9, 2, 2, 5, 1), "erode:2") == square(9, 4, 4, 1, 1)).all()  # -> the centre pixel


def test_flips_change_whole_objects_to_another_class() -> None:
    mask = square(8, 5, 5, 3, 2, square(8, 0, 0, 3, 1))
    mask[7, 0] = 255  # ignored pixels stay
    flipped = noisy(mask, "flip:1")  # two object classes: each object becomes the other one
    assert (flipped[0:3, 0:3] == 2).all() and (flipped[5:8, 5:8] == 1).all() and flipped[7, 0] == 255
    several = noisy(square(12, 0, 0, 3, 1, square(12, 6, 6, 3, 1)), "flip:1", num_classes=6)
    for top in (0, 6):  # every pixel of an object takes the same new class
        assert len(np.unique(several[top : top + 3, top : top + 3])) == 1 and several[top, top] != 1
    kept = [(noisy(square(8, 0, 0, 3, 1), "flip:0.5", seed=s)[0, 0] == 1) for s in range(40)]
    assert 8 < sum(kept) < 32  # about half the objects flip


def test_polygons_add_filled_regions_of_one_object_class_fixed_by_seed() -> None:
    empty = np.zeros((32, 32), np.uint8)
    drawn = noisy(empty, "polygon:1", num_classes=5, seed=3)
    classes = np.unique(drawn[drawn > 0])
    assert len(classes) == 1 and 1 <= classes[0] <= 4 and (drawn > 0).sum() >= 3
    assert ndimage.label(drawn > 0)[1] == 1  # one filled region
    assert (noisy(empty, "polygon:1", num_classes=5, seed=3) == drawn).all()
    assert not (noisy(empty, "polygon:1", num_classes=5, seed=4) == drawn).all()


@pytest.mark.parametrize("spec", ["blur:1", "dilate:0", "dilate:1.5", "erode:x", "flip:0", "flip:1.2", "dilate"])
def test_bad_noise_specs_are_refused(spec: str) -> None:
    with pytest.raises(PretrainlabError, match="mask_noise"):
        parse_mask_noise(spec)


def test_onset_of_a_constructed_curve() -> None:
    # f(t) = 0.8 (1 - exp(-t / 3)): f'(t) / f'(1) = exp(-(t - 1) / 3) falls below 0.1 first at t = 8 (7.9 < t)
    epochs = np.arange(1, 16, dtype=float)
    assert memorisation_onset(iou_curve(epochs, 0.8, 1.0, 3.0)) == 8
    assert memorisation_onset(iou_curve(epochs, 0.8, 1.0, 3.0), threshold=0.5) == 4  # exp(-(t-1)/3) < 0.5: t > 3.1
    assert memorisation_onset(0.04 * epochs[:10]) is None  # still rising steadily: no onset


def test_dense_protocol_records_noise_and_adele(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "timm:tinycnn", "--protocol", "dense", "--data", "composed:builtin:16", "--json",
                 "--option", "dense_epochs=4", "--option", "dense_min_steps=4", "--option", "mask_noise=dilate:1",
                 "--option", "mask_noise_seed=2", "--option", "adele=true"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert code == 0 and records
    settings = records[0]["settings"]
    assert settings["mask_noise"] == "dilate:1" and settings["mask_noise_seed"] == 2
    assert 0 < settings["noisy_pixel_share"] < 1
    curves = settings["adele"]["train_iou_curves"]
    assert len(curves) == settings["classes"] and all(len(curve) == 4 for curve in curves)  # one IoU per epoch


@pytest.mark.parametrize("option", ["mask_noise=blur:2", "mask_noise=flip:3", "adele=maybe", "adele_threshold=2",
                                    "mask_noise_seed=x"])
def test_bad_options_exit_2_one_line(option: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "timm:tinycnn", "--protocol", "dense", "--data", "composed:builtin:8", "--option", option,
                 "--option", "adele=true" if option.startswith("adele_") else "dense_epochs=1"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error: ") and "\n" not in error, error


def test_a_bad_adele_setting_is_refused_even_with_adele_off(capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in an ADELE setting must not be ignored silently because `adele` was left at its default."""
    code = main(["eval", "timm:tinycnn", "--protocol", "dense", "--data", "composed:builtin:8", "--option",
                 "adele_threshold=2", "--option", "dense_epochs=1"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "adele_threshold" in error and "\n" not in error, error
