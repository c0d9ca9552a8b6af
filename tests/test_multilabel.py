"""Multi-label evaluation: macro mAP against scikit-learn, subset accuracy by hand, the protocol on known data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from pretrainlab.data.composed import compose_source
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.eval import EvalContext, evaluate, load_target
from pretrainlab.eval.protocols import NotApplicable, skip_reason
from pretrainlab.eval.protocols.multilabel import mean_average_precision, per_class_average_precision, subset_accuracy


def test_macro_map_matches_scikit_learn() -> None:
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 2, (60, 6), generator=generator)
    targets[0] = 1  # every class has a positive image
    scores = torch.randn(60, 6, generator=generator) + targets * 0.8
    scores[:, 2] = scores[:, 2].round()  # ties in one class
    reference = average_precision_score(targets.numpy(), scores.numpy(), average="macro")
    assert mean_average_precision(scores, targets.float()) == pytest.approx(reference * 100, abs=1e-9)


def test_a_class_without_positive_images_is_left_out() -> None:
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0]]).float()
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.1, 0.7, 0.3]])
    per_class = per_class_average_precision(scores, targets)
    # class 0: ranking images 0 (pos), 1 (neg), 2 (pos): AP = (1/1 + 2/3) / 2; class 1: ranks 1, 2 first: AP = 1.
    assert per_class[:2].tolist() == pytest.approx([(1 + 2 / 3) / 2, 1.0]) and math.isnan(float(per_class[2]))
    assert mean_average_precision(scores, targets) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2 * 100)


def test_subset_accuracy_needs_every_label_right() -> None:
    targets = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 1, 1]]).float()
    logits = torch.tensor([[2.0, -1.0, 0.5],  # all right
                           [-3.0, -0.1, -2.0],  # all right (nothing present)
                           [1.0, -0.2, -1.0],  # class 1 missed
                           [-1.0, 0.3, 0.0]])  # logit 0 is probability 0.5: not predicted, class 2 missed
    assert subset_accuracy(logits, targets) == pytest.approx(50.0)


def multilabel_context(train: tuple[torch.Tensor, np.ndarray], test: tuple[torch.Tensor, np.ndarray],
                       seed: int = 0) -> EvalContext:
    """A context whose frozen features are given; images are placeholders, labels multi-hot."""
    splits = [ImageSet(np.zeros((len(labels), 8, 8), dtype=np.uint8), multilabels=labels)
              for _, labels in (train, test)]
    source = ImageSource("synthetic-multilabel", splits[0], splits[1])
    context = EvalContext(load_target("timm:tinycnn", 8, 1), source, torch.device("cpu"), {"seed": seed})
    context._features.update({"train": train[0], "test": test[0]})
    return context


def features_of_present_classes(labels: np.ndarray, noise: float, seed: int) -> torch.Tensor:
    """Each present class adds its own direction: a linear head can read off every label."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(labels.shape[1], 24, generator=torch.Generator().manual_seed(99)) * 2
    return torch.from_numpy(labels).float() @ directions + noise * torch.randn(len(labels), 24, generator=generator)


def test_multilabel_protocol_reads_labels_off_linear_features() -> None:
    rng = np.random.default_rng(0)
    train_labels, test_labels = rng.integers(0, 2, (300, 5)), rng.integers(0, 2, (100, 5))
    context = multilabel_context((features_of_present_classes(train_labels, 0.3, 1), train_labels),
                                 (features_of_present_classes(test_labels, 0.3, 2), test_labels))
    results = {result.metric: result for result in evaluate(context, "multilabel")}
    assert set(results) == {"mAP", "subset_accuracy"}
    assert results["mAP"].value > 99 and results["subset_accuracy"].value > 90
    assert results["mAP"].settings["classes_in_mAP"] == 5
    noisy = multilabel_context((features_of_present_classes(train_labels, 8.0, 1), train_labels),
                               (features_of_present_classes(test_labels, 8.0, 2), test_labels))
    noisy_map = {result.metric: result.value for result in evaluate(noisy, "multilabel")}["mAP"]
    assert 50 < noisy_map < results["mAP"].value - 5  # more noise, worse ranking, still above chance (~50)


def test_multilabel_on_composed_digits_and_skip_without_multilabels(builtin_source) -> None:
    assert "several labels" in skip_reason("multilabel", builtin_source)
    with pytest.raises(NotApplicable):
        evaluate(EvalContext(load_target("timm:tinycnn", 28, 1), builtin_source, torch.device("cpu")), "multilabel")
    source = compose_source(builtin_source, 120)
    results = {r.metric: r.value for r in evaluate(EvalContext(load_target("timm:tinycnn", 28, 1), source,
                                                               torch.device("cpu")), "multilabel")}
    chance = float(source.test.multilabels.mean()) * 100  # a random ranking's AP is the positive rate
    assert results["mAP"] > chance + 10
