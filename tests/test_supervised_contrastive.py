"""Supervised pre-training losses: SupCon and LOOK against loop references, the labelled memory, label checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses import LeaveOneOutKNNLoss, SupConLoss
from pretrainlab.methods import MethodContext
from pretrainlab.methods.look import LOOK, LOOKConfig
from pretrainlab.methods.parts.labelled_queue import LabelledMemoryQueue
from pretrainlab.methods.supcon import SupCon, SupConConfig


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a.norm() * b.norm()))


def naive_supcon(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """L_out with a loop over anchors: all views of all images, the anchor itself excluded."""
    batch, views = features.shape[:2]
    items = [(features[b, v], int(labels[b])) for v in range(views) for b in range(batch)]
    total, anchors = 0.0, 0
    for i, (anchor, label) in enumerate(items):
        others = [j for j in range(len(items)) if j != i]
        denominator = sum(math.exp(_cosine(anchor, items[j][0]) / temperature) for j in others)
        positives = [j for j in others if items[j][1] == label]
        if not positives:
            continue
        total += -sum(math.log(math.exp(_cosine(anchor, items[p][0]) / temperature) / denominator)
                      for p in positives) / len(positives)
        anchors += 1
    return total / anchors


def naive_look(queries: torch.Tensor, query_labels: torch.Tensor, candidates: torch.Tensor,
               candidate_labels: torch.Tensor, self_index: list[int], k: int, temperature: float) -> float:
    """Leave-one-out kNN with loops: sort the other candidates, k nearest vote, nearest same class as fallback."""
    losses = []
    for i in range(len(queries)):
        neighbours = sorted(
            ((_cosine(queries[i], candidates[j]), int(candidate_labels[j])) for j in range(len(candidates))
             if j != self_index[i]), reverse=True)
        label = int(query_labels[i])
        same_class = [entry for entry in neighbours if entry[1] == label]
        if not same_class:
            continue
        voters = neighbours[:k]
        if all(entry[1] != label for entry in voters):
            voters = voters + [same_class[0]]
        weights = [(math.exp(similarity / temperature), voter) for similarity, voter in voters]
        agreeing = sum(weight for weight, voter in weights if voter == label)
        losses.append(-math.log(agreeing / sum(weight for weight, _ in weights)))
    return sum(losses) / len(losses)


def test_supcon_matches_loop_over_anchors() -> None:
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(6, 2, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    loss = SupConLoss(temperature=0.3)(features, labels)
    assert float(loss) == pytest.approx(naive_supcon(features, labels, 0.3), rel=1e-5)


def test_supcon_with_one_view_skips_anchors_without_positives() -> None:
    features = torch.randn(5, 1, 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2, 2])  # image 2 has no positive at all
    assert float(SupConLoss(0.5)(features, labels)) == pytest.approx(naive_supcon(features, labels, 0.5), rel=1e-5)


def test_supcon_pulls_same_class_together() -> None:
    features = torch.randn(8, 2, 6, requires_grad=True)
    labels = torch.tensor([0, 1] * 4)
    SupConLoss(0.1)(features, labels).backward()
    step = features - 0.5 * features.grad  # one gradient step
    z = F.normalize(step.detach(), dim=2).reshape(16, 6)
    before = F.normalize(features.detach(), dim=2).reshape(16, 6)
    same = labels.repeat_interleave(2)[:, None] == labels.repeat_interleave(2)[None, :]

    def mean_same_class_similarity(x: torch.Tensor) -> float:
        return float((x @ x.T)[same].mean())

    assert mean_same_class_similarity(z) > mean_same_class_similarity(before)


@pytest.mark.parametrize("k", [1, 3, 20])
def test_look_matches_loops(k: int) -> None:
    generator = torch.Generator().manual_seed(4)
    candidates = torch.randn(14, 5, generator=generator, dtype=torch.float64)
    candidate_labels = torch.randint(0, 3, (14,), generator=generator)
    queries, query_labels = candidates[8:], candidate_labels[8:]  # the last 6 candidates are the batch
    self_index = torch.arange(8, 14)
    loss = LeaveOneOutKNNLoss(neighbours=k, temperature=0.2)(queries, query_labels, candidates, candidate_labels,
                                                              self_index)
    expected = naive_look(queries, query_labels, candidates, candidate_labels, self_index.tolist(), k, 0.2)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_look_only_the_k_nearest_vote() -> None:
    # A same-class candidate outside the k nearest gets no gradient: the image is not pulled to its whole class.
    query = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[0.9, 0.1], [0.8, -0.2], [-1.0, 0.05]], requires_grad=True)
    labels = torch.tensor([0, 1, 0])
    loss = LeaveOneOutKNNLoss(neighbours=2, temperature=0.1)(query, torch.tensor([0]), candidates, labels)
    loss.backward()
    assert candidates.grad[0].abs().sum() > 0 and candidates.grad[1].abs().sum() > 0
    assert candidates.grad[2].abs().sum() == 0


def test_look_without_same_class_neighbour_uses_the_nearest_one() -> None:
    query = torch.tensor([[1.0, 0.0]], requires_grad=True)
    candidates = torch.tensor([[0.9, 0.1], [-1.0, 0.2]])
    loss = LeaveOneOutKNNLoss(neighbours=1, temperature=0.5)(query, torch.tensor([0]), candidates,
                                                             torch.tensor([1, 0]))
    loss.backward()
    assert torch.isfinite(loss.detach()) and float(loss.detach()) > 0 and torch.isfinite(query.grad).all()


def test_look_gives_zero_loss_when_no_candidate_shares_a_label() -> None:
    query = torch.randn(2, 3, requires_grad=True)
    loss = LeaveOneOutKNNLoss(2)(query, torch.tensor([0, 1]), torch.randn(4, 3), torch.tensor([2, 2, 3, 3]))
    loss.backward()
    assert float(loss.detach()) == 0 and torch.isfinite(query.grad).all()


def test_labelled_queue_keeps_labels_with_embeddings() -> None:
    queue = LabelledMemoryQueue(size=5, dim=3)
    assert queue.valid()[0].shape == (0, 3)
    first, second = torch.randn(3, 3), torch.randn(4, 3)
    queue.push(first, torch.tensor([0, 1, 2]))
    queue.push(second, torch.tensor([3, 4, 5, 6]))
    embeddings, labels = queue.valid()
    # Oldest out first: slots 0-2 held the first batch; the second wrapped around into slots 3, 4, 0, 1.
    assert labels.tolist() == [5, 6, 2, 3, 4]
    torch.testing.assert_close(embeddings[2], first[2])
    torch.testing.assert_close(embeddings[0], second[2])


def _context(num_classes: int) -> MethodContext:
    return MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=num_classes,
                         dataset_size=64)


def test_look_memory_fills_during_training(rgb_batch: torch.Tensor) -> None:
    config = build_config(LOOKConfig, {"hidden_dim": 32, "projection_dim": 16, "neighbours": 4, "memory_size": 24},
                          "look")
    method = LOOK(create_backbone("tinycnn", 32, 3), config, _context(4))
    labels = torch.arange(16) % 4
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        loss = method(method.prepare_batch(rgb_batch, labels, generator))["loss"]
        assert torch.isfinite(loss)
    embeddings, memory_labels = method.memory.valid()
    assert embeddings.shape == (24, 16) and sorted(set(memory_labels.tolist())) == [0, 1, 2, 3]


@pytest.mark.parametrize("method_class,config_class", [(SupCon, SupConConfig), (LOOK, LOOKConfig)])
def test_supervised_methods_require_labels(method_class: type, config_class: type, rgb_batch: torch.Tensor) -> None:
    config = build_config(config_class, {"hidden_dim": 16, "projection_dim": 8}, method_class.name)
    with pytest.raises(PretrainlabError, match="labelled dataset"):
        method_class(create_backbone("tinycnn", 32, 3), config, _context(0))
    method = method_class(create_backbone("tinycnn", 32, 3), config, _context(4))
    with pytest.raises(PretrainlabError, match="labels"):
        method(method.prepare_batch(rgb_batch, None, torch.Generator().manual_seed(0)))


def test_bad_hyperparameters_raise() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=0)
    with pytest.raises(ValueError, match="neighbours"):
        LeaveOneOutKNNLoss(neighbours=0)
    with pytest.raises(ValueError, match=r"\(B, V, D\)"):
        SupConLoss()(torch.randn(4, 8), torch.zeros(4))
    with pytest.raises(PretrainlabError, match="view_count"):
        build_config(SupConConfig, {"view_count": 0}, "supcon")
    with pytest.raises(PretrainlabError, match="neighbours"):
        build_config(LOOKConfig, {"neighbours": 0}, "look")
