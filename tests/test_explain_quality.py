"""Quality metrics on constructed maps and models, and the pointing game of a supervised vs a random tinycnn."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from pretrainlab.eval.target import EvalTarget
from pretrainlab.explain.attribution import Explained, attribution_maps
from pretrainlab.explain.model import PooledBackbone
from pretrainlab.explain.quality import (
    box_ious,
    box_overlap,
    insertion_deletion,
    object_boxes,
    pointing_hits,
    road_scores,
)
from tests.brief_training import train_supervised
from tests.explain_data import canvases, make_context, tiny_target


def test_pointing_hits_and_tolerance() -> None:
    masks = np.zeros((2, 10, 10), dtype=np.uint8)
    masks[:, 2:4, 2:4] = 3
    maps = np.zeros((2, 10, 10), dtype=np.float32)
    maps[0, 3, 3] = 1  # on the object
    maps[1, 5, 5] = 1  # two pixels off it (diagonally)
    assert pointing_hits(maps, masks, np.array([3, 3])).tolist() == [True, False]
    assert pointing_hits(maps, masks, np.array([3, 3]), tolerance=2).tolist() == [True, True]
    assert pointing_hits(maps, masks, np.array([4, 4])).tolist() == [False, False]  # another class's id


def test_box_iou_on_constructed_objects() -> None:
    assert box_overlap((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_overlap((0, 0, 1, 1), (1, 1, 2, 2)) == 1 / 7  # 1 shared pixel of 4 + 4 - 1
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[2:6, 2:6] = 1
    mask[12:18, 10:14] = 1  # a second object of the same class
    assert sorted(object_boxes(mask, 1)) == [(2, 2, 5, 5), (12, 10, 17, 13)]
    relevance = np.zeros((1, 20, 20), dtype=np.float32)
    relevance[0, 12:18, 10:14] = 1.0
    relevance[0, 0, 19] = 0.6  # a separate small region above the threshold: the largest region wins
    assert box_ious(relevance, mask[None], np.array([1]))[0] == 1.0
    assert box_ious(relevance, mask[None], np.array([2]))[0] == 0.0  # the class is absent


class TextureModel(nn.Module):
    """Class 1's logit grows with the contrast of the top-left 8x8 patch (blurring removes it); class 0's is zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        contrast = 8 * x[:, :, :8, :8].abs().mean(dim=(1, 2, 3)) - 4
        return torch.stack([torch.zeros_like(contrast), contrast], dim=1)


def test_insertion_deletion_and_road_prefer_the_map_that_ranks_the_patch_first() -> None:
    x = torch.zeros(2, 1, 24, 24)
    x[:, :, :8, :8] = (torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1.0  # a +-1 checkerboard
    good = np.zeros((2, 24, 24), dtype=np.float32)
    good[:, :8, :8] = 1.0
    good += np.random.default_rng(0).random(good.shape).astype(np.float32) * 0.01  # break ties
    bad = 1.0 - good
    classes = np.array([1, 1])
    insert_good, delete_good = insertion_deletion(TextureModel(), x, good, classes, steps=8)
    insert_bad, delete_bad = insertion_deletion(TextureModel(), x, bad, classes, steps=8)
    assert (delete_good < delete_bad).all() and (insert_good > insert_bad).all()
    morf_good, lerf_good = road_scores(TextureModel(), x, good, classes, percentiles=(30, 70))
    morf_bad, lerf_bad = road_scores(TextureModel(), x, bad, classes, percentiles=(30, 70))
    assert (morf_good < morf_bad).all() and (lerf_good > lerf_bad).all()


def train_supervised_tinycnn(source, steps: int = 120, batch: int = 32) -> nn.Module:  # noqa: ANN001
    """A tinycnn trained with labels on digits (28 px) for `steps` Adam steps of `batch` images, seed 0."""
    return train_supervised(tiny_target("cnn").backbone, source, steps, batch)


def pointing_accuracy(target: EvalTarget, source, tmp_path, images: int = 40) -> float:  # noqa: ANN001
    context = make_context(target, source, tmp_path, images=images)
    context.settings.probe_images = 200
    explained = Explained(context.classifier.model, PooledBackbone(context.backbone), context.layer, context.reshape)
    images, classes = context.explained
    maps = attribution_maps("gradcam", explained, context.inputs.x[images], classes)
    mask_ids = np.array([context.mask_id(int(c)) for c in classes])
    return float(pointing_hits(maps, context.inputs.masks[images], mask_ids, tolerance=2).mean() * 100)


def test_pointing_game_of_a_supervised_tinycnn_beats_a_random_one(builtin_source, tmp_path) -> None:
    objects = canvases(builtin_source, count=200)
    random_target = tiny_target("cnn")
    trained = EvalTarget(train_supervised_tinycnn(builtin_source), "supervised", 28)
    random_score = pointing_accuracy(random_target, objects, tmp_path / "random")
    trained_score = pointing_accuracy(trained, objects, tmp_path / "trained")
    assert trained_score > random_score + 15, (trained_score, random_score)
