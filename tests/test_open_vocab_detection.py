"""Open-vocabulary detection probe: AP50 against a hand-counted case, IoU against pixel counting, composed
canvases' boxes against their masks, CenterNet targets decoded back to their boxes, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pretrainlab.cli import main
from pretrainlab.data import load_source
from pretrainlab.data.boxes import BOXES, box_iou, check_boxes
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.centernet import build_targets, decode_peaks
from pretrainlab.eval.detection_ap import Boxes, average_precision, average_precisions
from pretrainlab.eval.open_vocab_detector import split_boxes
from pretrainlab.eval.protocols import EvalContext, evaluate
from pretrainlab.eval.protocols.open_vocab_detection import class_split
from pretrainlab.eval.target import load_target
from pretrainlab.pipeline import build_run_config, untrained_run


def test_ap50_matches_a_hand_counted_ranking() -> None:
    # Ground truth of class 0: A (image 0), B (image 0), C (image 1).  Detections of class 0 by score:
    #   .9 image 0 on A exactly                    -> TP (A)
    #   .8 image 0 shifted 1 px from A (IoU .82)   -> FP: A is taken, B does not overlap (a duplicate)
    #   .7 image 1 half off C (IoU 50/150 = .33)   -> FP: below 0.5
    #   .6 image 0 on B, 1 px taller (IoU .91)     -> TP (B)
    #   .5 image 1 on C, 2 px taller (IoU .83)     -> TP (C)
    # precision 1, 1/2, 1/3, 2/4, 3/5; recall 1/3, 1/3, 1/3, 2/3, 1. All-point interpolation (best precision at
    # any recall >= r): 1, .6, .6, .6, .6 -> AP = 1/3 * 1 + 1/3 * .6 + 1/3 * .6 = 11/15 (the uninterpolated
    # mean of precisions at the hits, (1 + .5 + .6) / 3 = .7, would differ).
    truth = Boxes(np.array([0, 0, 1]), np.array([0, 0, 0]),
                  np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float))
    detections = Boxes(np.array([1, 0, 0, 1, 0, 0]), np.array([0, 0, 0, 0, 1, 0]),
                       np.array([[0, 0, 10, 12], [1, 0, 11, 10], [0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30],
                                 [20, 20, 30, 31]], dtype=float),
                       np.array([0.5, 0.8, 0.9, 0.7, 0.95, 0.6]))
    assert average_precision(detections, truth, 0) == pytest.approx(11 / 15)
    # class 1 has a detection but no ground truth: no AP; a class with ground truth and no detection: 0
    values = average_precisions(detections, truth, 2)
    assert np.isnan(values[1])
    lonely = Boxes(np.array([0]), np.array([1]), np.array([[0, 0, 5, 5]], dtype=float))
    assert average_precision(detections, lonely, 1) == 0.0
    assert average_precision(detections, truth, 0, iou_threshold=0.95) == pytest.approx((1 / 3) * 1)


def test_iou_matches_pixel_counting() -> None:
    rng = np.random.default_rng(0)
    corners = np.sort(rng.integers(0, 20, size=(12, 2, 2)), axis=1)  # (12, [low, high], [x, y])
    boxes = np.concatenate([corners[:, 0], corners[:, 1] + 1], axis=1)  # (x0, y0, x1, y1), non-empty
    masks = np.zeros((12, 21, 21), dtype=bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        mask[y0:y1, x0:x1] = True
    counted = np.array([[(a & b).sum() / (a | b).sum() for b in masks] for a in masks])
    np.testing.assert_allclose(box_iou(torch.tensor(boxes), torch.tensor(boxes)).numpy(), counted)


def test_composed_boxes_are_the_objects_tight_boxes() -> None:
    source = load_source("composed:builtin:24")
    boxes = check_boxes(source.train, 10, "test")
    for canvas, mask in zip(boxes, source.train.masks, strict=True):
        classes = canvas[canvas[:, 0] > 0, 0]
        for row in canvas[canvas[:, 0] > 0]:
            if (classes == row[0]).sum() == 1:  # one object of its class: its mask pixels lie inside its box
                ys, xs = np.nonzero(mask == row[0])
                assert xs.min() >= row[1] and ys.min() >= row[2] and xs.max() < row[3] and ys.max() < row[4]


def test_centernet_targets_decode_to_their_boxes() -> None:
    boxes = np.array([[[4, 8, 20, 24], [30, 6, 50, 20]]], dtype=np.float32)  # (1, 2, 4) pixels, stride 4
    targets = build_targets(boxes, np.array([[0, 1]]), (14, 14), (4.0, 4.0))
    heat = torch.full((1, 14, 14), -9.0)
    heat.view(1, -1)[0, targets.cell[0]] = 9.0  # peaks exactly at the centre cells
    size = torch.zeros(1, 2, 14, 14)
    offset = torch.zeros(1, 2, 14, 14)
    for slot in range(2):
        cell = int(targets.cell[0, slot])
        size[0, :, cell // 14, cell % 14] = targets.size[0, slot]
        offset[0, :, cell // 14, cell % 14] = targets.offset[0, slot]
    outputs = {"heat": heat, "size": size, "offset": offset, "embed": torch.zeros(1, 3, 14, 14)}
    _, decoded, _ = decode_peaks(outputs, 2)
    found = sorted((decoded[0] * 4).tolist())
    np.testing.assert_allclose(found, sorted(boxes[0].tolist()), atol=1e-4)
    assert float(targets.heat.max()) == 1.0 and int((targets.heat == 1).sum()) == 2


def test_class_split_refuses_unknown_and_overlapping_names() -> None:
    classes = [str(k) for k in range(10)]
    assert class_split(classes, {}) == (list(range(7)), [7, 8, 9])
    assert class_split(classes, {"unseen": "2, 5", "seen": [0, 1]}) == ([0, 1], [2, 5])
    for options, message in (({"unseen": "7,cat"}, r"unknown class name\(s\) cat"),
                             ({"unseen": "7", "seen": "7,8"}, "both seen and unseen"),
                             ({"unseen": ""}, "at least one class")):
        with pytest.raises(PretrainlabError, match=message):
            class_split(classes, options)


def test_split_boxes_keeps_only_the_trained_classes() -> None:
    boxes = np.array([[[3, 0, 0, 4, 4], [1, 5, 5, 9, 9], [0, 0, 0, 0, 0]]])  # classes 2 and 0, one padding row
    pixels, labels = split_boxes(boxes, [2, 7])  # class 7 has no box in this split
    assert labels.tolist() == [[0, -1, -1]] and pixels[0, 1].tolist() == [5, 5, 9, 9]


def write_npz(path: Path, boxes: np.ndarray) -> str:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 32, 32), dtype=np.uint8)
    np.savez(path, x_train=images, x_test=images[:4], boxes_train=boxes, boxes_test=boxes[:4],
             classes=np.array(["cat", "dog"]))
    return f"npz:{path}"


def test_bad_input_is_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    boxes = np.zeros((8, 2, 5), dtype=np.int16)
    boxes[:, 0] = (1, 2, 2, 12, 12)
    boxes[:, 1] = (2, 10, 10, 30, 30)
    boxes[3, 1] = (2, 10, 10, 40, 30)  # x1 = 40 beyond the 32 px image
    cases = [
        (["--data", write_npz(tmp_path / "outside.npz", boxes)], "image 3 has a box outside the 32x32 image"),
        (["--data", "builtin"], "needs object boxes"),
        (["--data", "composed:builtin:24", "--option", "unseen=7,cat"], "unknown class name(s) cat"),
        (["--data", "composed:builtin:24", "--option", "finetune=true", "--option", "backbone_lr_scale=-1"],
         "option backbone_lr_scale=-1 is not valid"),
    ]
    for arguments, message in cases:
        code = main(["eval", "timm:tinycnn", "--protocol", "open_vocab_detection", "--no-store", *arguments])
        error = capsys.readouterr().err.strip()
        assert code == 2 and message in error and "\n" not in error, error
    assert BOXES in load_source(f"npz:{tmp_path / 'outside.npz'}").train.extras


def test_protocol_end_to_end_frozen_and_finetuned(tmp_path: Path) -> None:
    data = "composed:builtin:24"
    config = build_run_config("clip", {"backbone": "tinycnn", "data": f"captions:{data}", "img_size": 28,
                                       "out": str(tmp_path / "clip")}, {"seed": 0},
                              {"text_width": 16, "text_depth": 1, "embed_dim": 8})
    target = load_target(str(untrained_run(config, load_source(f"captions:{data}"))), 28, 1)
    before = {k: v.clone() for k, v in target.backbone.state_dict().items()}
    for finetune in ("false", "true"):
        options = {"img_size": 28, "detect_epochs": 1, "detect_min_steps": 3, "finetune": finetune, "unseen": "8,9"}
        context = EvalContext(target, load_source(data), torch.device("cpu"), options)
        results = {r.metric: r for r in evaluate(context, "open_vocab_detection")}
        assert set(results) == {"AP50_seen", "AP50_unseen", "AP50", "agnostic_AP50"}
        settings = results["AP50"].settings
        assert settings["unseen"] == ["8", "9"] and settings["text_embeddings"] == "the run's text tower"
        assert settings["backbone"] == ("fine-tuned copy" if finetune == "true" else "frozen")
        assert all(0 <= r.value <= 100 for r in results.values() if r.value == r.value)
    after = target.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # fine-tuning trained a copy


def test_finetuning_starts_from_the_frozen_probe_and_improves_on_it() -> None:
    # With the backbone's learning rate at 0 the fine-tuned detector must BE the frozen probe (same maps, same
    # head training); batch statistics in training once made it score AP50 9 where the frozen probe scored 90.
    target, source = load_target("timm:tinycnn", 28, 1), load_source("composed:builtin:120")
    base = {"img_size": 28, "detect_epochs": 1, "detect_min_steps": 60, "seed": 0}

    def scores(**extra: object) -> dict[str, float]:
        context = EvalContext(target, source, torch.device("cpu"), {**base, **extra})
        return {r.metric: r.value for r in evaluate(context, "open_vocab_detection")}

    frozen, still = scores(), scores(finetune="true", backbone_lr_scale=0.0)
    assert still == pytest.approx(frozen, abs=1e-6)
    tuned = scores(finetune="true", backbone_lr_scale=1.0)
    assert tuned["agnostic_AP50"] > frozen["agnostic_AP50"]
