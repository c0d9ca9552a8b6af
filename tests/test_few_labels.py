"""Few labels: exact class-balanced subset counts, nesting, the empty-class error, both protocols' records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from protocol_data import small_source

from pretrainlab.data.subsets import class_balanced_subset, fraction_label
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, evaluate, load_target
from pretrainlab.eval.linear import linear_probe_accuracy


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 1.0])
def test_subsets_hold_the_exact_share_of_every_class(builtin_source, fraction):
    labels = builtin_source.train.labels
    subset = class_balanced_subset(labels, fraction, seed=3)
    assert len(np.unique(subset)) == len(subset)
    for cls in range(10):
        expected = math.floor(fraction * np.sum(labels == cls) + 0.5)
        assert np.sum(labels[subset] == cls) == expected


def test_subsets_are_fixed_by_the_seed_and_nested(builtin_source):
    labels = builtin_source.train.labels
    one, ten, full = (class_balanced_subset(labels, f, seed=5) for f in (0.01, 0.1, 1.0))
    assert np.array_equal(one, class_balanced_subset(labels, 0.01, seed=5))
    assert not np.array_equal(ten, class_balanced_subset(labels, 0.1, seed=6))
    assert set(one) <= set(ten) <= set(full) and len(full) == len(labels)


def test_a_fraction_that_empties_a_class_names_the_class_and_the_fraction():
    labels = np.array([0] * 200 + [1] * 200 + [2] * 30)
    with pytest.raises(PretrainlabError, match=r"label fraction 1% leaves class 2 \('two'\) with no training image "
                                               r"\(it has 30\); use a fraction of at least 3.33333%"):
        class_balanced_subset(labels, 0.01, 0, class_names=["zero", "one", "two"])
    assert fraction_label(0.005) == "0.5%" and fraction_label(1.0) == "100%"
    with pytest.raises(PretrainlabError, match="must be in"):
        class_balanced_subset(labels, 1.5, 0)


def test_few_labels_linear_matches_a_probe_fitted_on_the_subset_by_hand(builtin_source):
    source = small_source(builtin_source, 30, 10)
    context = EvalContext(load_target("timm:tinycnn", 28, 1), source, torch.device("cpu"),
                          {"fractions": [0.5, 1.0], "seed": 2})
    results = evaluate(context, "few_labels_linear")
    assert [r.metric for r in results] == ["top1@50%", "top1@100%"]
    assert [r.settings["labelled_images"] for r in results] == [150, 300]
    subset = torch.from_numpy(class_balanced_subset(source.train.labels, 0.5, seed=2))
    train_features, train_labels = context.features("train"), context.labels("train")
    by_hand, _ = linear_probe_accuracy(train_features[subset], train_labels[subset], context.features("test"),
                                       context.labels("test"), seed=2)
    assert results[0].value == pytest.approx(by_hand)


def test_few_labels_finetune_trains_each_subset_and_checks_fractions_first(builtin_source):
    source = small_source(builtin_source, 20, 5)
    options = {"fractions": [0.1, 0.5], "epochs": 1, "min_steps": 2, "batch_size": 16, "seed": 0}
    context = EvalContext(load_target("timm:tinycnn", 28, 1), source, torch.device("cpu"), options)
    results = evaluate(context, "few_labels_finetune")
    assert [r.metric for r in results] == ["top1@10%", "top1@50%"]
    assert [r.settings["labelled_images"] for r in results] == [20, 100]
    assert [r.settings["steps"] for r in results] == [2, 6]  # 20 images: one batch, raised to min_steps
    context.options["fractions"] = [1.0, 0.01]
    with pytest.raises(PretrainlabError, match="label fraction 1% leaves class 0"):
        evaluate(context, "few_labels_finetune")
