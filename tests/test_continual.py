"""Continual learning: task splits, nearest class mean against a hand loop, average incremental accuracy by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from protocol_data import context_with_features, gaussian_clusters, small_source

from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, evaluate, load_target
from pretrainlab.eval.protocols.continual import incremental_accuracies, task_splits


def test_task_splits_partition_the_classes_in_a_seeded_order():
    splits = task_splits(np.arange(10), 5, seed=3)
    assert [len(part) for part in splits] == [2] * 5
    assert sorted(np.concatenate(splits).tolist()) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(splits, task_splits(np.arange(10), 5, seed=3), strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(splits, task_splits(np.arange(10), 5, seed=4), strict=True))
    assert [len(part) for part in task_splits(np.arange(7), 3, seed=0)] == [3, 2, 2]
    with pytest.raises(PretrainlabError, match="1 <= tasks <= number of classes"):
        task_splits(np.arange(4), 5, seed=0)


def hand_nearest_mean(train_x, train_y, test_x, classes, distance):
    """One test image at a time: the class whose mean (a Python sum) is nearest."""
    means = {}
    for cls in classes:
        rows = [train_x[i] for i in range(len(train_y)) if int(train_y[i]) == cls]
        means[cls] = [sum(values) / len(rows) for values in zip(*[row.tolist() for row in rows], strict=True)]
    predictions = []
    for row in test_x.tolist():
        def score(cls, row=row):
            mean = means[cls]
            if distance == "euclidean":
                return -math.sqrt(sum((a - b) ** 2 for a, b in zip(row, mean, strict=True)))
            dot = sum(a * b for a, b in zip(row, mean, strict=True))
            return dot / (math.sqrt(sum(a * a for a in row)) * math.sqrt(sum(b * b for b in mean)))
        predictions.append(max(classes, key=score))
    return predictions


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_nearest_class_mean_and_average_incremental_accuracy_match_a_hand_loop(distance):
    train_x, train_y = gaussian_clusters(6, 15, 4, spread=2.5, seed=1)  # overlapping: errors happen
    test_x, test_y = gaussian_clusters(6, 10, 4, spread=2.5, seed=1)
    splits = task_splits(np.arange(6), 3, seed=0)
    accuracies = incremental_accuracies(train_x, train_y, test_x, test_y, splits, distance)
    seen, by_hand = [], []
    for task in splits:
        seen += task.tolist()
        keep = [i for i in range(len(test_y)) if int(test_y[i]) in seen]
        predicted = hand_nearest_mean(train_x, train_y, test_x[keep], seen, distance)
        by_hand.append(100 * sum(p == int(test_y[i]) for p, i in zip(predicted, keep, strict=True)) / len(keep))
    assert accuracies == pytest.approx(by_hand, abs=1e-4)
    assert 0 < by_hand[-1] < 100  # the case is not trivial
    context = context_with_features((train_x, train_y), (test_x, test_y), {"tasks": 3, "distance": distance})
    results = {r.metric: r for r in evaluate(context, "continual")}
    assert results["avg_incremental_top1"].value == pytest.approx(sum(by_hand) / 3, abs=1e-4)
    assert results["final_top1"].value == pytest.approx(by_hand[-1], abs=1e-4)
    assert results["final_top1"].settings["class_order"] == [part.tolist() for part in splits]


def test_unknown_distance_is_refused():
    features, labels = gaussian_clusters(2, 3, 2, spread=1.0, seed=0)
    with pytest.raises(PretrainlabError, match="valid distances: euclidean, cosine"):
        incremental_accuracies(features, labels, features, labels, [np.arange(2)], "manhattan")


def test_the_protocol_runs_on_real_frozen_features(builtin_source):
    source = small_source(builtin_source, 20, 10)
    context = EvalContext(load_target("timm:tinycnn", 28, 1), source, torch.device("cpu"), {"seed": 1})
    results = {r.metric: r for r in evaluate(context, "continual")}
    assert set(results) == {"avg_incremental_top1", "final_top1"}
    per_task = results["final_top1"].settings["per_task_top1"]
    assert len(per_task) == 5 and results["final_top1"].value == pytest.approx(per_task[-1], abs=1e-3)
    assert results["final_top1"].value > 20  # random conv features already separate digits well above chance
