"""Retrieval: mAP against scikit-learn's average precision per query, recall@k against a brute-force loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from protocol_data import context_with_features, gaussian_clusters
from sklearn.metrics import average_precision_score

from pretrainlab.eval import evaluate
from pretrainlab.eval.average_precision import average_precisions
from pretrainlab.eval.protocols.retrieval import retrieval_scores


def small_integer_features(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with few distinct directions, so many similarities tie exactly; labels in 0..4."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randint(0, 2, (count, 3), generator=generator).float()  # 7 distinct directions
    features[features.sum(dim=1) == 0] = 1.0  # no zero vector: its cosine is undefined
    return features, torch.randint(0, 5, (count,), generator=generator)


def brute_force_recall(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                       test_labels: torch.Tensor, k: int) -> float:
    hits = 0
    for query, label in zip(test, test_labels, strict=True):
        similarities = [float(F.cosine_similarity(query, item, dim=0)) for item in train]
        nearest = np.argsort(similarities, kind="stable")[::-1][:k]
        hits += any(int(train_labels[index]) == int(label) for index in nearest)
    return hits / len(test) * 100


def test_average_precision_matches_scikit_learn_with_ties() -> None:
    train, train_labels = small_integer_features(200, seed=0)
    test, test_labels = small_integer_features(30, seed=1)
    similarity = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T  # (30, 200)
    assert len(torch.unique(similarity)) < 30  # 6,000 similarities, heavy ties: the hard case
    ours = average_precisions(similarity, test_labels[:, None] == train_labels[None, :])
    reference = [average_precision_score((train_labels == label).numpy(), row.numpy())
                 for row, label in zip(similarity, test_labels, strict=True)]
    assert ours.numpy() == pytest.approx(np.array(reference), abs=1e-12)
    scores = retrieval_scores(train, train_labels, test, test_labels)
    assert scores["mAP"] == pytest.approx(float(np.mean(reference)) * 100, abs=1e-9)


def test_recall_matches_a_brute_force_loop_and_chunking_changes_nothing() -> None:
    generator = torch.Generator().manual_seed(3)
    train, test = torch.randn(120, 8, generator=generator), torch.randn(25, 8, generator=generator)
    train_labels = torch.randint(0, 4, (120,), generator=generator)
    test_labels = torch.randint(0, 4, (25,), generator=generator)
    whole = retrieval_scores(train, train_labels, test, test_labels)
    chunked = retrieval_scores(train, train_labels, test, test_labels, chunk_elements=300)  # 2 queries a chunk
    assert whole == pytest.approx(chunked)
    for k in (1, 5):
        assert whole[f"recall@{k}"] == pytest.approx(brute_force_recall(train, train_labels, test, test_labels, k))


def test_query_without_relevant_image_is_left_out_of_map() -> None:
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    train_labels = torch.tensor([0, 1, 0])
    test, test_labels = torch.tensor([[1.0, 0.1], [0.0, 1.0]]), torch.tensor([0, 2])
    scores = retrieval_scores(train, train_labels, test, test_labels)
    # Query 0 ranks train 0 (label 0), 2 (label 0), 1: AP = (1/1 + 2/2) / 2 = 1; query 1 has no label-2 image.
    assert scores["mAP"] == pytest.approx(100.0) and scores["queries_without_match"] == 1
    assert scores["recall@1"] == pytest.approx(50.0) and scores["recall@5"] == pytest.approx(50.0)


def test_retrieval_protocol_on_separable_clusters() -> None:
    context = context_with_features(gaussian_clusters(5, 40, 16, 0.3, seed=0),
                                    gaussian_clusters(5, 10, 16, 0.3, seed=0))
    results = {result.metric: result for result in evaluate(context, "retrieval")}
    assert set(results) == {"recall@1", "recall@5", "mAP"}
    assert results["recall@1"].value == pytest.approx(100.0) and results["mAP"].value > 99
    assert results["mAP"].settings["deterministic"] and results["mAP"].higher_is_better


def test_retrieval_on_real_digits_orders_backbones_sensibly(builtin_source) -> None:
    """Raw pixels retrieve digits of the same class far better than random features do."""
    train, test = builtin_source.train, builtin_source.test
    pixels = [torch.from_numpy(split.images[:, :, :, 0].reshape(len(split), -1)).float() for split in (train, test)]
    labels = [torch.from_numpy(split.labels) for split in (train, test)]
    by_pixels = retrieval_scores(pixels[0], labels[0], pixels[1][:200], labels[1][:200])
    noise = torch.Generator().manual_seed(0)
    random_features = [torch.randn(len(x), 16, generator=noise) for x in pixels]
    by_noise = retrieval_scores(random_features[0], labels[0], random_features[1][:200], labels[1][:200])
    assert by_pixels["recall@1"] > 85 and by_pixels["mAP"] > by_noise["mAP"] + 20
    assert by_noise["mAP"] == pytest.approx(10, abs=2)  # chance: a tenth of the database is relevant
