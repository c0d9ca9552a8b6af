"""Dense probe: mIoU arithmetic against a hand-counted confusion matrix, and the protocol on composed digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pretrainlab.data.composed import compose_source
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, evaluate, load_target
from pretrainlab.eval.protocols import NotApplicable, skip_reason
from pretrainlab.eval.protocols.dense import confusion_matrix, iou_per_class, segmentation_scores


def test_miou_against_a_hand_counted_confusion_matrix() -> None:
    truth = torch.tensor([[0, 0, 1, 1],
                          [0, 2, 2, 255],
                          [3, 3, 3, 255]])
    predicted = torch.tensor([[0, 1, 1, 1],
                              [0, 2, 0, 2],
                              [3, 3, 2, 0]])
    # Counted by hand over the 10 pixels that are not 255 (rows: truth, columns: prediction).
    # class 0: pixels (0,0) -> 0, (0,1) -> 1, (1,0) -> 0
    # class 1: (0,2) -> 1, (0,3) -> 1
    # class 2: (1,1) -> 2, (1,2) -> 0
    # class 3: (2,0) -> 3, (2,1) -> 3, (2,2) -> 2
    # class 4: never true, never predicted
    expected = torch.tensor([[2, 1, 0, 0, 0],
                             [0, 2, 0, 0, 0],
                             [1, 0, 1, 0, 0],
                             [0, 0, 1, 2, 0],
                             [0, 0, 0, 0, 0]])
    confusion = confusion_matrix(truth, predicted, num_classes=5)
    assert torch.equal(confusion, expected)
    # IoU = TP / (TP + FP + FN): 0: 2/(2+1+1), 1: 2/(2+1+0), 2: 1/(1+1+1), 3: 2/(2+0+1), 4: undefined.
    ious = iou_per_class(confusion)
    assert ious[:4].tolist() == pytest.approx([2 / 4, 2 / 3, 1 / 3, 2 / 3])
    assert math.isnan(float(ious[4]))
    miou, pixel_accuracy = segmentation_scores(confusion)
    assert miou == pytest.approx((2 / 4 + 2 / 3 + 1 / 3 + 2 / 3) / 4 * 100)
    assert pixel_accuracy == pytest.approx(7 / 10 * 100)


@pytest.fixture(scope="module")
def composed_digits(builtin_source):
    """160 training and 40 test canvases (56 px) of the builtin digits, with masks."""
    return compose_source(builtin_source, 160)


def dense_context(source, **options) -> EvalContext:
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same random backbone in every context
        target = load_target("timm:tinycnn", 28, 1)
    return EvalContext(target, source, torch.device("cpu"), {"dense_epochs": 2, "dense_min_steps": 60, **options})


def test_dense_probe_learns_the_digit_masks(composed_digits) -> None:
    results = {result.metric: result for result in evaluate(dense_context(composed_digits), "dense")}
    assert set(results) == {"mIoU", "pixel_accuracy"}
    settings = results["mIoU"].settings
    assert settings["classes"] == 11 and settings["input_size"] == 56 and settings["feature_map"] == [128, 14, 14]
    # Predicting background everywhere: IoU of the background = its pixel share, 0 for the 10 digit classes.
    background = float(np.mean(composed_digits.test.masks == 0))
    assert results["mIoU"].value > background * 100 / 11 + 5
    assert results["pixel_accuracy"].value > 60
    assert all(result.higher_is_better for result in results.values())
    repeated = {result.metric: result.value for result in evaluate(dense_context(composed_digits), "dense")}
    assert repeated["mIoU"] == pytest.approx(results["mIoU"].value)  # deterministic given the seed


def test_dense_probe_needs_masks_and_a_valid_layer(builtin_source, composed_digits) -> None:
    assert "masks" in skip_reason("dense", builtin_source)
    assert skip_reason("dense", composed_digits) is None
    with pytest.raises(NotApplicable, match="per-pixel masks"):
        evaluate(dense_context(builtin_source), "dense")
    with pytest.raises(PretrainlabError, match="layer=5 is out of range.*3 feature maps"):
        evaluate(dense_context(composed_digits, layer=5), "dense")
