"""kNN and linear probe arithmetic against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from pretrainlab.eval.knn import default_k, knn_accuracy, knn_predict
from pretrainlab.eval.linear import linear_probe_accuracy


def brute_force_knn(train: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, k: int, t: float,
                    classes: int) -> list[int]:
    predictions = []
    for q in query:
        sims = [(float(q @ x / (q.norm() * x.norm())), int(y)) for x, y in zip(train, labels, strict=True)]
        sims.sort(key=lambda pair: -pair[0])
        votes = [0.0] * classes
        for similarity, label in sims[:k]:
            votes[label] += math.exp(similarity / t)
        predictions.append(int(np.argmax(votes)))
    return predictions


def test_knn_matches_brute_force_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    train, query = torch.randn(60, 8, generator=generator), torch.randn(15, 8, generator=generator)
    labels = torch.randint(0, 4, (60,), generator=generator)
    scores = knn_predict(train, labels, query, k=7, temperature=0.1, num_classes=4, chunk=4)
    assert scores.argmax(1).tolist() == brute_force_knn(train, labels, query, 7, 0.1, 4)


def test_knn_accuracy_and_default_k() -> None:
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    accuracy, k = knn_accuracy(train, labels, torch.tensor([[1.0, 0.05], [0.05, 1.0]]), torch.tensor([0, 1]), k=2)
    assert accuracy == 100.0 and k == 2
    assert default_k(torch.arange(10).repeat(100)) == 20
    assert default_k(torch.arange(10).repeat(1000)) == 200


def test_linear_probe_agrees_with_scikit_learn(builtin_source) -> None:
    rng = np.random.default_rng(0)
    projection = torch.from_numpy(rng.normal(size=(784, 32)).astype(np.float32))

    def features(split):  # a fixed random projection of the pixels: a real, imperfect representation
        return torch.from_numpy(split.images.reshape(len(split), -1).astype(np.float32) / 255) @ projection

    train_x, test_x = features(builtin_source.train), features(builtin_source.test)
    train_y, test_y = torch.from_numpy(builtin_source.train.labels), torch.from_numpy(builtin_source.test.labels)
    ours, l2 = linear_probe_accuracy(train_x, train_y, test_x, test_y)
    mean, std = train_x.mean(0), train_x.std(0)
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(((train_x - mean) / std).numpy(), train_y.numpy())
    theirs = 100 * reference.score(((test_x - mean) / std).numpy(), test_y.numpy())
    assert ours == pytest.approx(theirs, abs=2.0)
    assert ours > 70  # far above the 10 % of chance
