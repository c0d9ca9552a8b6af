"""Corruptions: exact behaviour on tiny arrays, monotonic severity on real digits, and the protocol's arithmetic."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from protocol_data import small_source
from scipy.ndimage import gaussian_filter

from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, evaluate, load_target
from pretrainlab.eval.image_corruptions import (
    CORRUPTIONS,
    SEVERITY_PARAMETERS,
    box_weights,
    brightness,
    contrast,
    corrupt,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    pixelate,
    shot_noise,
)


def test_brightness_shifts_the_hsv_value() -> None:
    grey = torch.tensor([0.0, 0.3, 0.95]).view(1, 1, 1, 3)
    assert brightness(grey, 0.1).flatten().tolist() == pytest.approx([0.1, 0.4, 1.0])
    pixels = [(0.2, 0.4, 0.1), (0.0, 0.0, 0.0), (0.9, 0.5, 0.7), (0.3, 0.3, 0.3)]
    rgb = torch.tensor(pixels).T.reshape(1, 3, 1, 4)
    shifted = brightness(rgb, 0.2).reshape(3, 4).T
    for pixel, ours in zip(pixels, shifted, strict=True):
        hue, saturation, value = colorsys.rgb_to_hsv(*pixel)
        assert ours.tolist() == pytest.approx(colorsys.hsv_to_rgb(hue, saturation, min(value + 0.2, 1.0)), abs=1e-6)


def test_pixelate_replaces_blocks_by_their_means() -> None:
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) / 16
    # factor 0.65: int(4 * 0.65) = 2 pixels a side, so each 2x2 block becomes its mean.
    expected = torch.tensor([[2.5, 2.5, 4.5, 4.5], [2.5, 2.5, 4.5, 4.5],
                             [10.5, 10.5, 12.5, 12.5], [10.5, 10.5, 12.5, 12.5]]) / 16
    assert torch.allclose(pixelate(x, 0.65)[0, 0], expected)
    weights = box_weights(28, 26)  # non-integer ratio: fractional overlaps, rows still average
    assert torch.allclose(weights.sum(dim=1), torch.ones(26, dtype=torch.float64))
    assert weights[0, :2].tolist() == pytest.approx([26 / 28, 2 / 28])


def test_contrast_scales_deviations_from_each_channel_mean() -> None:
    x = torch.tensor([[0.2, 0.4], [0.6, 0.8]]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    x[:, 1] += 0.1
    result = contrast(x, 0.5)
    assert result[0, 0].flatten().tolist() == pytest.approx([0.35, 0.45, 0.55, 0.65])
    assert result[0, 1].flatten().tolist() == pytest.approx([0.45, 0.55, 0.65, 0.75])


def test_gaussian_blur_matches_scipy() -> None:
    image = torch.zeros(1, 1, 15, 15)
    image[0, 0, 7, 7], image[0, 0, 0, 3] = 1.0, 0.6  # an impulse, and one at the edge (nearest-pixel extension)
    for sigma in (0.4, 1.0, 1.6):
        reference = gaussian_filter(image[0, 0].double().numpy(), sigma, mode="nearest", truncate=4.0)
        assert gaussian_blur(image, sigma)[0, 0].numpy() == pytest.approx(reference, abs=2e-5)  # float32


def test_noise_statistics_and_seeding() -> None:
    grey = torch.full((4, 1, 32, 32), 0.5)
    noisy = gaussian_noise(grey, 0.08, torch.Generator().manual_seed(0))
    assert float((noisy - grey).std()) == pytest.approx(0.08, rel=0.05)
    assert torch.equal(noisy, gaussian_noise(grey, 0.08, torch.Generator().manual_seed(0)))
    photons = shot_noise(grey, 100, torch.Generator().manual_seed(0))
    assert float(photons.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(photons.var()) == pytest.approx(0.5 / 100, rel=0.1)  # Poisson: variance = mean / photons
    assert torch.equal(jpeg(grey, 80), jpeg(grey, 80)) and float((jpeg(grey, 95) - grey).abs().max()) < 2 / 255


def test_every_corruption_worsens_with_severity_on_real_digits(builtin_source) -> None:
    images = torch.from_numpy(builtin_source.test.images[:64])  # (64, 28, 28, 1) uint8
    for name in CORRUPTIONS:
        corrupted = [corrupt(images, name, severity, torch.Generator().manual_seed(0)) for severity in range(1, 6)]
        assert all(c.shape == images.shape and c.dtype == torch.uint8 for c in corrupted)
        if name == "pixelate":
            # Down-and-up resampling errors do not grow steadily at 28 px; the resolution left does:
            # a noise image keeps exactly int(28 * factor) distinct columns, fewer at every severity.
            noise = torch.randint(0, 256, (1, 28, 28, 1), generator=torch.Generator().manual_seed(0),
                                  dtype=torch.uint8)
            distinct = [torch.unique(corrupt(noise, name, severity)[0, :, :, 0], dim=1).shape[1]
                        for severity in range(1, 6)]
            assert distinct == [int(28 * factor) for factor in SEVERITY_PARAMETERS["pixelate"]] == [26, 25, 23, 21, 18]
            continue
        damage = [float((c.float() - images.float()).abs().mean()) for c in corrupted]
        assert damage == sorted(damage) and damage[0] > 0, f"{name}: {damage}"


def test_unknown_corruption_names_the_closest() -> None:
    with pytest.raises(PretrainlabError, match="did you mean 'contrast'"):
        corrupt(torch.zeros(1, 4, 4, 1, dtype=torch.uint8), "contrst", 1)


def test_corruption_protocol_arithmetic(builtin_source) -> None:
    source = small_source(builtin_source, 30, 10)
    target = load_target("timm:tinycnn", 28, 1)
    options = {"corruptions": ["brightness", "gaussian_noise"], "max_test": 50}
    context = EvalContext(target, source, torch.device("cpu"), dict(options))
    results = {result.metric: result.value for result in evaluate(context, "corruption")}
    assert set(results) == {"top1@clean", "top1@brightness", "top1@gaussian_noise", "top1@corrupted",
                            "relative@brightness", "relative@gaussian_noise", "relative@corrupted"}
    settings = evaluate(context, "corruption")[0].settings
    per_severity = settings["per_severity_top1"]
    assert settings["test_images_corrupted"] == 50 and len(per_severity["brightness"]) == 5
    for name in ("brightness", "gaussian_noise"):
        assert results[f"top1@{name}"] == pytest.approx(np.mean(per_severity[name]), abs=1e-2)
        assert results[f"relative@{name}"] == pytest.approx(results[f"top1@{name}"] / results["top1@clean"] * 100)
    assert results["top1@corrupted"] == pytest.approx((results["top1@brightness"] + results["top1@gaussian_noise"]) / 2)
    assert results["top1@brightness"] < results["top1@clean"]
    knn = evaluate(EvalContext(target, source, torch.device("cpu"), {**options, "classifier": "knn"}), "corruption")
    assert all(result.metric.startswith("knn_") for result in knn)
