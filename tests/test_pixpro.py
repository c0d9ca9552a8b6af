"""PixPro: pixel matching through crop boxes and flips, the consistency loss, the PPM, the momentum encoder."""

from __future__ import annotations

import math

import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.data.views import crop_resize_flip
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads.pixel_propagation import PixelPropagation
from pretrainlab.losses.pixel_matching import pixel_centres, pixel_consistency_loss, pixel_match_mask
from pretrainlab.methods import METHODS, MethodContext


def random_boxes(batch: int, generator: torch.Generator) -> torch.Tensor:
    corner = torch.rand(batch, 2, generator=generator) * 0.5
    size = 0.3 + torch.rand(batch, 2, generator=generator) * 0.5
    return torch.cat([corner, (corner + size).clamp(max=1.0)], dim=1)


def naive_centre(box: list[float], flipped: bool, row: int, column: int, height: int, width: int) -> tuple:
    x0, y0, x1, y1 = box
    across = (column + 0.5) / width
    if flipped:
        across = 1.0 - across
    return x0 + across * (x1 - x0), y0 + (row + 0.5) / height * (y1 - y0)


def naive_match_mask(boxes_a, flipped_a, boxes_b, flipped_b, height, width, threshold) -> torch.Tensor:
    """Every pixel centre of A against every pixel centre of B, one pair at a time."""
    batch = len(boxes_a)
    mask = torch.zeros(batch, height * width, height * width, dtype=torch.bool)
    for b in range(batch):
        box_a, box_b = boxes_a[b].tolist(), boxes_b[b].tolist()
        diagonal_a = math.hypot((box_a[2] - box_a[0]) / width, (box_a[3] - box_a[1]) / height)
        diagonal_b = math.hypot((box_b[2] - box_b[0]) / width, (box_b[3] - box_b[1]) / height)
        for i in range(height * width):
            xa, ya = naive_centre(box_a, bool(flipped_a[b]), i // width, i % width, height, width)
            for j in range(height * width):
                xb, yb = naive_centre(box_b, bool(flipped_b[b]), j // width, j % width, height, width)
                mask[b, i, j] = math.hypot(xa - xb, ya - yb) / max(diagonal_a, diagonal_b) < threshold
    return mask


def test_pixel_centres_match_a_naive_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(4, generator).double()
    flipped = torch.tensor([False, True, False, True])
    centres = pixel_centres(boxes, flipped, 3, 5)
    for b in range(4):
        for i in range(15):
            expected = naive_centre(boxes[b].tolist(), bool(flipped[b]), i // 5, i % 5, 3, 5)
            assert centres[b, i].tolist() == pytest.approx(expected)


@pytest.mark.parametrize("threshold", [0.7, 2.0])
def test_pixel_match_mask_matches_a_naive_loop(threshold: float) -> None:
    generator = torch.Generator().manual_seed(1)
    boxes_a, boxes_b = random_boxes(6, generator).double(), random_boxes(6, generator).double()
    flipped_a = torch.rand(6, generator=generator) < 0.5
    flipped_b = torch.rand(6, generator=generator) < 0.5
    mask = pixel_match_mask(boxes_a, flipped_a, boxes_b, flipped_b, 4, 4, threshold)
    expected = naive_match_mask(boxes_a, flipped_a, boxes_b, flipped_b, 4, 4, threshold)
    assert torch.equal(mask, expected)
    assert mask.any(), "the random boxes should overlap somewhere"


def test_identical_views_match_pixel_to_same_pixel_and_a_flip_mirrors_it() -> None:
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.8]])  # square bins
    same = pixel_match_mask(boxes, torch.tensor([False]), boxes, torch.tensor([False]), 4, 4, 0.7)
    # Square bins: neighbours are >= 1 / sqrt(2) > 0.7 diagonals apart, so only the pixel itself matches.
    assert torch.equal(same[0], torch.eye(16, dtype=torch.bool))
    mirrored = pixel_match_mask(boxes, torch.tensor([False]), boxes, torch.tensor([True]), 4, 4, 0.7)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    for row in range(4):
        for column in range(4):
            expected[row * 4 + column, row * 4 + (3 - column)] = True
    assert torch.equal(mirrored[0], expected)


def test_disjoint_crops_have_no_match_and_a_zero_loss() -> None:
    boxes_a = torch.tensor([[0.0, 0.0, 0.4, 0.4]])
    boxes_b = torch.tensor([[0.6, 0.6, 1.0, 1.0]])
    mask = pixel_match_mask(boxes_a, torch.tensor([False]), boxes_b, torch.tensor([False]), 4, 4, 0.7)
    assert not mask.any()
    prediction = torch.randn(1, 8, 4, 4, requires_grad=True)
    loss = pixel_consistency_loss(prediction, torch.randn(1, 8, 4, 4), mask)
    loss.backward()
    assert float(loss.detach()) == 0.0 and prediction.grad is not None


def test_pixel_centres_follow_the_actual_crop_and_flip() -> None:
    """Images whose channels hold their own x and y coordinates: a view's pixels reveal where they came from."""
    size, out = 64, 8
    coordinate = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    image = torch.stack([coordinate[None, :].expand(size, size), coordinate[:, None].expand(size, size)])
    images = image[None].expand(3, -1, -1, -1)  # (3, 2, 64, 64): channel 0 = x, channel 1 = y
    boxes = torch.tensor([[0.25, 0.125, 0.75, 0.625], [0.0, 0.0, 1.0, 1.0], [0.5, 0.25, 1.0, 0.875]],
                         dtype=torch.float64)
    flipped = torch.tensor([False, True, True])
    views = crop_resize_flip(images, boxes, flipped, out)  # (3, 2, 8, 8)
    sampled = views.flatten(2).transpose(1, 2)  # (3, 64, 2) source (x, y) of every view pixel
    centres = pixel_centres(boxes, flipped, out, out)
    assert torch.allclose(sampled, centres, atol=1e-6)


def naive_consistency_loss(prediction, target, mask) -> float:
    losses = []
    for b in range(len(prediction)):
        p = prediction[b].flatten(1)
        t = target[b].flatten(1)
        values = [2 - 2 * float(torch.nn.functional.cosine_similarity(p[:, i], t[:, j], dim=0))
                  for i in range(p.shape[1]) for j in range(t.shape[1]) if mask[b, i, j]]
        if values:
            losses.append(sum(values) / len(values))
    return sum(losses) / len(losses)


def test_pixel_consistency_loss_matches_a_naive_loop() -> None:
    generator = torch.Generator().manual_seed(2)
    prediction = torch.randn(4, 6, 3, 3, generator=generator, dtype=torch.float64)
    target = torch.randn(4, 6, 3, 3, generator=generator, dtype=torch.float64)
    mask = torch.rand(4, 9, 9, generator=generator) < 0.2
    mask[2] = False  # an image without positive pairs is left out of the mean
    mask[0, 0, 0] = True
    loss = pixel_consistency_loss(prediction, target, mask)
    assert float(loss) == pytest.approx(naive_consistency_loss(prediction, target, mask))


def test_pixel_propagation_matches_a_naive_sum() -> None:
    module = PixelPropagation(4, sharpness=2.0, transform_layers=1).double()
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    output = module(x)
    keys = torch.nn.functional.normalize(x.flatten(2), dim=1)
    values = torch.nn.functional.normalize(module.transform(x).flatten(2), dim=1)
    for b in range(2):
        for i in range(6):
            expected = sum(max(float(keys[b, :, i] @ keys[b, :, j]), 0.0) ** 2 * values[b, :, j] for j in range(6))
            assert torch.allclose(output[b].flatten(1)[:, i], expected)


def tiny_pixpro(**options):
    method_class = METHODS.get("pixpro")
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, "pixpro")
    context = MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    return method_class(create_backbone("tinycnn", 32, 3), config, context)


@pytest.mark.parametrize("instance_weight", [0.0, 1.0])
def test_pixpro_step_trains_backbone_and_moves_momentum_encoder(instance_weight: float, rgb_batch) -> None:
    method = tiny_pixpro(instance_weight=instance_weight)
    method.train()
    teacher_before = [p.clone() for p in method.momentum_encoder["backbone"].parameters()]
    assert not any(p.requires_grad for p in method.momentum_encoder["backbone"].parameters())
    batch = method.prepare_batch(rgb_batch, None, torch.Generator().manual_seed(0))
    outputs = method(batch)
    assert float(outputs["overlapping_views"]) > 0.5
    outputs["loss"].backward()
    assert all(p.grad is None for p in method.momentum_encoder["backbone"].parameters())
    with torch.no_grad():
        for parameter in method.backbone.parameters():
            parameter -= 0.1 * parameter.grad
    method.on_step_end(0, 10)
    moved = [not torch.equal(before, after) for before, after in
             zip(teacher_before, method.momentum_encoder["backbone"].parameters(), strict=True)]
    assert any(moved)


def test_pixpro_rejects_bad_options() -> None:
    with pytest.raises(PretrainlabError, match="distance_threshold"):
        tiny_pixpro(distance_threshold=0.0)
    with pytest.raises(PretrainlabError, match="momentum"):
        tiny_pixpro(momentum=1.5)
