"""Noisy labels: exact noise transition rates, ELR against a naive formula, NMTune's terms, the protocol's records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from protocol_data import context_with_features, gaussian_clusters, small_source

from pretrainlab.data.label_noise import noisy_labels, parse_noise
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, evaluate, load_target
from pretrainlab.eval.elr import EarlyLearningRegularization, elr_regulariser
from pretrainlab.eval.nmtune import consistency_term, covariance_term, singular_value_term

LABELS = np.repeat(np.arange(10), [900, 1000, 1100, 950, 1050, 1000, 1000, 980, 1020, 1000])


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6])
def test_symmetric_noise_flips_the_exact_share_of_each_class_uniformly_to_other_classes(rate):
    noisy = noisy_labels(LABELS, "sym", rate, 10, seed=1)
    transitions = np.zeros((10, 10), dtype=int)
    np.add.at(transitions, (LABELS, noisy), 1)
    for cls in range(10):
        size = int(np.sum(cls == LABELS))
        flipped = size - transitions[cls, cls]
        assert flipped == math.floor(rate * size + 0.5)
        others = np.delete(transitions[cls], cls)
        expected = flipped / 9
        assert np.all(np.abs(others - expected) < 5 * math.sqrt(expected) + 1), others  # uniform, no preference
    assert not np.array_equal(noisy, noisy_labels(LABELS, "sym", rate, 10, seed=2))
    assert np.array_equal(noisy, noisy_labels(LABELS, "sym", rate, 10, seed=1))


def test_asymmetric_noise_sends_every_flip_to_the_next_class():
    noisy = noisy_labels(LABELS, "asym", 0.4, 10, seed=0)
    wrong = noisy != LABELS
    assert np.all(noisy[wrong] == (LABELS[wrong] + 1) % 10)
    for cls in range(10):
        assert np.sum(wrong & (cls == LABELS)) == math.floor(0.4 * np.sum(cls == LABELS) + 0.5)


def test_noise_names_parse_and_bad_ones_fail():
    assert parse_noise("sym40") == ("sym", 0.4) and parse_noise("asym20%") == ("asym", 0.2)
    for bad in ("sym", "flip20", "sym120"):
        with pytest.raises(PretrainlabError, match="a noise setting looks like sym40"):
            parse_noise(bad)


def test_elr_matches_a_naive_per_example_computation():
    torch.manual_seed(0)
    logits_first, logits_second = torch.randn(2, 6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    indices = torch.tensor([1, 4, 5, 6, 2, 7])
    beta, strength = 0.7, 3.0
    elr = EarlyLearningRegularization(labels, 4, beta, strength)
    replay = iter([logits_first, logits_second])

    def model(inputs: torch.Tensor) -> torch.Tensor:
        return next(replay)

    elr(model, torch.empty(0), indices)
    loss = elr(model, torch.empty(0), indices)
    naive_targets, naive_terms = {}, []
    for row, index in enumerate(indices.tolist()):
        for logits in (logits_first, logits_second):
            p = [min(max(math.exp(v) / sum(math.exp(u) for u in logits[row].tolist()), 1e-4), 1 - 1e-4)
                 for v in logits[row].tolist()]
            p_hat = [value / sum(p) for value in p]
            old = naive_targets.get(index, [0.0] * 4)
            naive_targets[index] = [beta * o + (1 - beta) * h for o, h in zip(old, p_hat, strict=True)]
        inner = sum(a * b for a, b in zip(p, naive_targets[index], strict=True))
        naive_terms.append(math.log(1 - inner))
    naive_ce = F.cross_entropy(logits_second, labels[indices]).item()
    assert loss.item() == pytest.approx(naive_ce + strength * sum(naive_terms) / len(naive_terms), rel=1e-5)
    assert torch.allclose(elr.targets[indices], torch.tensor([naive_targets[i] for i in indices.tolist()]))
    assert torch.all(elr.targets[[0, 3]] == 0)  # examples not seen keep an empty target


def test_elr_regulariser_pulls_predictions_toward_the_target_and_vanishes_without_lambda():
    probabilities = torch.tensor([[0.2, 0.8]], requires_grad=True)
    elr_regulariser(probabilities, torch.tensor([[0.9, 0.1]])).backward()
    assert probabilities.grad[0, 0] < probabilities.grad[0, 1]  # descending raises p of the target's class
    labels = torch.tensor([1, 0, 1])
    logits = torch.randn(3, 2)
    plain = EarlyLearningRegularization(labels, 2, strength=0.0)(lambda x: logits, torch.empty(0), torch.arange(3))
    assert plain.item() == pytest.approx(F.cross_entropy(logits, labels).item())


def test_nmtune_terms_match_naive_formulas():
    torch.manual_seed(0)
    features, transformed = torch.randn(12, 5), torch.randn(12, 5)
    naive_consistency = sum(
        ((features[i] / features[i].norm() - transformed[i] / transformed[i].norm()) ** 2).sum().item()
        for i in range(12)) / (12 * 5)
    assert consistency_term(features, transformed).item() == pytest.approx(naive_consistency, rel=1e-5)
    covariance = np.cov(transformed.numpy(), rowvar=False)  # unbiased, (D, D)
    naive_covariance = sum(covariance[i, j] ** 2 for i in range(5) for j in range(5) if i != j) / 5
    assert covariance_term(transformed).item() == pytest.approx(naive_covariance, rel=1e-4)
    singular = np.linalg.svd(transformed.numpy(), compute_uv=False)
    assert singular_value_term(transformed, 2).item() == pytest.approx(-np.mean(singular[:2] / singular.sum()),
                                                                       rel=1e-5)


def test_the_protocol_reports_every_setting_on_exact_synthetic_features():
    train = gaussian_clusters(4, 60, 8, spread=0.5, seed=0)
    test = gaussian_clusters(4, 20, 8, spread=0.5, seed=0)
    context = context_with_features(train, test, {"noise": ["sym40", "asym20"], "head_epochs": 5,
                                                   "head_min_steps": 100, "seed": 0})
    results = {r.metric: r for r in evaluate(context, "noisy_labels")}
    assert list(results) == ["top1@clean", "top1@sym40%", "top1@sym40%+elr", "top1@asym20%", "top1@asym20%+elr",
                             "top1@nmtune", "top1@mlp"]
    assert results["top1@clean"].value > 95  # well-separated clusters: a linear head is near perfect
    assert results["top1@sym40%"].settings["wrong_labels"] == pytest.approx(0.4)
    assert results["top1@asym20%+elr"].settings["elr_lambda"] == 3.0
    again = {r.metric: r.value for r in evaluate(context, "noisy_labels")}
    assert again == {metric: r.value for metric, r in results.items()}
    context.options["mode"] = "retrain"
    with pytest.raises(PretrainlabError, match="mode must be one of frozen, finetune"):
        evaluate(context, "noisy_labels")


def test_finetune_mode_trains_the_backbone_with_elr(builtin_source):
    source = small_source(builtin_source, 4, 2)
    options = {"mode": "finetune", "noise": ["sym20"], "epochs": 1, "min_steps": 2, "batch_size": 20,
               "head_epochs": 2, "head_min_steps": 5}
    context = EvalContext(load_target("timm:tinycnn", 28, 1), source, torch.device("cpu"), options)
    results = evaluate(context, "noisy_labels")
    assert [r.metric for r in results][:3] == ["top1@clean", "top1@sym20%", "top1@sym20%+elr"]
    assert results[2].settings["head"] == "fine-tuned backbone + linear head" and results[2].settings["steps"] == 2
