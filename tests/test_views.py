"""Batched views: per-image randomness, determinism, and agreement with per-sample torchvision ops."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from pretrainlab.data.color import adjust_hue, grayscale, hsv_to_rgb, rgb_to_hsv
from pretrainlab.data.views import (
    ViewSpec,
    crop_resize_flip,
    gaussian_blur,
    make_view_set,
    make_views,
    normalize,
    resize_for_eval,
    sample_crop_boxes,
    to_float,
)
from pretrainlab.errors import PretrainlabError

MEAN, STD = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25])


def test_views_have_requested_shape_and_differ_per_image(rgb_batch: torch.Tensor) -> None:
    images = to_float(rgb_batch[:1].expand(8, -1, -1, -1))  # 8 copies of one image
    views = make_views(images, ViewSpec(24), torch.Generator().manual_seed(0), MEAN, STD)
    assert views.images.shape == (8, 3, 24, 24)
    assert views.boxes.shape == (8, 4) and views.flipped.shape == (8,)
    distinct = {tuple(v.flatten()[:50].tolist()) for v in views.images}
    assert len(distinct) == 8, "each copy must get its own random parameters"


def test_a_view_set_gives_each_copy_its_own_parameters(rgb_batch: torch.Tensor) -> None:
    images = to_float(rgb_batch[:6])
    first, second, third = make_view_set(images, ViewSpec(20, count=3), torch.Generator().manual_seed(0), MEAN, STD)
    for views in (first, second, third):
        assert views.images.shape == (6, 3, 20, 20) and views.boxes.shape == (6, 4) and views.flipped.shape == (6,)
    assert not torch.equal(first.boxes, second.boxes) and not torch.equal(second.boxes, third.boxes)
    # The i-th view of every copy comes from the i-th image: re-cropping image i with that view's own box,
    # flip and no colour change reproduces it.
    plain = make_view_set(images, replace(ViewSpec(20, count=2), jitter_p=0.0, grayscale_p=0.0),
                          torch.Generator().manual_seed(1), MEAN, STD)
    for views in plain:
        expected = normalize(crop_resize_flip(images, views.boxes, views.flipped, 20), MEAN, STD)
        torch.testing.assert_close(views.images, expected)


def test_views_are_reproducible_from_the_generator_seed(rgb_batch: torch.Tensor) -> None:
    images = to_float(rgb_batch)
    spec = ViewSpec(32, blur_p=0.5, solarize_p=0.2)
    first = make_views(images, spec, torch.Generator().manual_seed(5), MEAN, STD).images
    second = make_views(images, spec, torch.Generator().manual_seed(5), MEAN, STD).images
    third = make_views(images, spec, torch.Generator().manual_seed(6), MEAN, STD).images
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_full_box_without_flip_is_identity(rgb_batch: torch.Tensor) -> None:
    images = to_float(rgb_batch)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(len(images), -1)
    out = crop_resize_flip(images, boxes, torch.zeros(len(images), dtype=torch.bool), 32)
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)
    flipped = crop_resize_flip(images, boxes, torch.ones(len(images), dtype=torch.bool), 32)
    torch.testing.assert_close(flipped, images.flip(-1), atol=1e-5, rtol=0)


def test_crop_box_selects_the_right_pixels(rgb_batch: torch.Tensor) -> None:
    images = to_float(rgb_batch)
    # The top-left 16x16 quarter resampled at 16 px is exactly that quarter.
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5]]).expand(len(images), -1)
    out = crop_resize_flip(images, boxes, torch.zeros(len(images), dtype=torch.bool), 16)
    torch.testing.assert_close(out, images[:, :, :16, :16], atol=1e-5, rtol=0)


def test_crop_boxes_respect_scale_and_stay_inside() -> None:
    spec = ViewSpec(32, crop_scale=(0.25, 0.5))
    boxes = sample_crop_boxes(2000, 32, 32, spec, torch.Generator().manual_seed(0), torch.device("cpu"))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert float(boxes.min()) >= 0 and float(boxes.max()) <= 1
    assert float(area.min()) >= 0.2 and float(area.max()) <= 0.56  # rounding to whole pixels


def test_colour_helpers_match_torchvision() -> None:
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    for shift in (-0.3, 0.1, 0.45):
        expected = torch.stack([TF.adjust_hue(image, shift) for image in x])
        torch.testing.assert_close(adjust_hue(x, torch.full((4,), shift)), expected, atol=1e-5, rtol=0)


def test_blur_preserves_mean_and_smooths() -> None:
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    spec = ViewSpec(32, blur_p=1.0, blur_sigma=(1.5, 1.5))
    blurred = gaussian_blur(x, spec, torch.Generator().manual_seed(0))
    assert abs(float(blurred.mean() - x.mean())) < 0.01
    assert float(blurred.diff(dim=-1).abs().mean()) < 0.5 * float(x.diff(dim=-1).abs().mean())
    reference = TF.gaussian_blur(x, kernel_size=[11, 11], sigma=[1.5, 1.5])
    torch.testing.assert_close(blurred[:, :, 6:-6, 6:-6], reference[:, :, 6:-6, 6:-6], atol=2e-3, rtol=0)


def test_grayscale_images_skip_colour_operations() -> None:
    batch = torch.randint(0, 256, (8, 28, 28, 1), dtype=torch.uint8)
    views = make_views(to_float(batch), ViewSpec(28), torch.Generator().manual_seed(0), MEAN[:1], STD[:1])
    assert views.images.shape == (8, 1, 28, 28) and torch.isfinite(views.images).all()


def test_eval_resize_and_normalisation(rgb_batch: torch.Tensor) -> None:
    out = resize_for_eval(rgb_batch, 64, MEAN, STD)
    assert out.shape == (16, 3, 64, 64)
    same = resize_for_eval(rgb_batch, 32, MEAN, STD)
    torch.testing.assert_close(same, (to_float(rgb_batch) - 0.5) / 0.25)


@pytest.mark.parametrize("bad", [{"crop_scale": (0.0, 1.0)}, {"flip_p": 1.5}, {"size": 2}])
def test_bad_view_settings_raise(bad: dict) -> None:
    with pytest.raises(PretrainlabError):
        ViewSpec(**{"size": 32, **bad})
