"""SwAV: Sinkhorn-Knopp equal partition, the swapped-prediction loss, prototypes, multi-crop views, queue."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import Prototypes
from pretrainlab.losses import SwAVLoss, sinkhorn_knopp
from pretrainlab.methods import MethodContext
from pretrainlab.methods.swav import SwAV, SwAVConfig


def naive_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> list[list[float]]:
    """The paper's algorithm with loops over a (K prototypes x N images) matrix; returns per-image codes."""
    images, prototypes = scores.shape
    q = [[math.exp(float(scores[n, k]) / epsilon) for n in range(images)] for k in range(prototypes)]
    total = sum(sum(row) for row in q)
    q = [[value / total for value in row] for row in q]
    for _ in range(iterations):
        for k in range(prototypes):
            row_sum = sum(q[k])
            q[k] = [value / row_sum / prototypes for value in q[k]]
        for n in range(images):
            column_sum = sum(q[k][n] for k in range(prototypes))
            for k in range(prototypes):
                q[k][n] = q[k][n] / column_sum / images
    return [[q[k][n] * images for k in range(prototypes)] for n in range(images)]


@pytest.fixture()
def scores() -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    z = F.normalize(torch.randn(12, 8, generator=generator), dim=1)
    prototypes = F.normalize(torch.randn(5, 8, generator=generator), dim=1)
    return z @ prototypes.T  # (12, 5) cosine scores


def test_sinkhorn_matches_loops(scores: torch.Tensor) -> None:
    codes = sinkhorn_knopp(scores, epsilon=0.5, iterations=3)
    expected = torch.tensor(naive_sinkhorn(scores.double(), 0.5, 3), dtype=codes.dtype)
    torch.testing.assert_close(codes, expected, rtol=1e-4, atol=1e-6)


def test_sinkhorn_codes_are_an_equal_partition(scores: torch.Tensor) -> None:
    codes = sinkhorn_knopp(scores, epsilon=0.3, iterations=100)  # (N, K)
    images, prototypes = codes.shape
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(images))  # each image: a distribution
    # Converged: every prototype gets N / K images' worth of mass.
    torch.testing.assert_close(codes.sum(dim=0), torch.full((prototypes,), images / prototypes), rtol=1e-3, atol=1e-3)
    assert (codes >= 0).all()
    # Three iterations (the paper's setting) already give exact columns and nearly equal rows.
    codes = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(images))
    assert codes.sum(dim=0).min() > 0.25 * images / prototypes


def test_sinkhorn_stays_finite_for_large_scores() -> None:
    codes = sinkhorn_knopp(torch.randn(6, 4) * 100, epsilon=0.05)
    assert torch.isfinite(codes).all()


def test_shared_scores_join_the_partition_once(scores: torch.Tensor) -> None:
    batch, queue = scores[:4], scores[4:]
    with_queue = sinkhorn_knopp(batch, 0.1, 3, shared_scores=queue)
    torch.testing.assert_close(with_queue, sinkhorn_knopp(scores, 0.1, 3)[:4])


def test_swapped_prediction_matches_reference(scores: torch.Tensor) -> None:
    views = [scores[:4], scores[4:8], scores[8:12]]  # 2 global views, 1 local view of 4 images
    loss = SwAVLoss(temperature=0.2, epsilon=0.1)(views[:2], views[2:])
    expected, pairs = 0.0, 0
    for index in range(2):
        codes = naive_sinkhorn(views[index].double(), 0.1, 3)
        for other in range(3):
            if other == index:
                continue
            for image in range(4):
                logits = [float(v) / 0.2 for v in views[other][image]]
                log_normaliser = math.log(sum(math.exp(v) for v in logits))
                expected -= sum(c * (v - log_normaliser) for c, v in zip(codes[image], logits, strict=True)) / 4
            pairs += 1
    assert float(loss) == pytest.approx(expected / pairs, rel=1e-4)


def test_loss_gradient_does_not_flow_through_codes(scores: torch.Tensor) -> None:
    views = [scores[:6].clone().requires_grad_(True), scores[6:].clone().requires_grad_(True)]
    SwAVLoss()(views, []).backward()
    assert all(view.grad is not None and view.grad.abs().sum() > 0 for view in views)


def test_prototypes_freeze_and_renormalise() -> None:
    prototypes = Prototypes(8, 6)
    torch.testing.assert_close(prototypes.weight.norm(dim=1), torch.ones(6))
    z = F.normalize(torch.randn(4, 8), dim=1)
    prototypes(z, frozen=True).sum().backward()
    assert prototypes.weight.grad is not None and prototypes.weight.grad.abs().sum() == 0
    prototypes.weight.grad = None
    prototypes(z).sum().backward()
    assert prototypes.weight.grad.abs().sum() > 0
    with torch.no_grad():
        prototypes.weight.mul_(3.0)
    prototypes.normalize_()
    torch.testing.assert_close(prototypes.weight.norm(dim=1), torch.ones(6))


def _tiny_swav(**options: object) -> SwAV:
    values = {"hidden_dim": 32, "projection_dim": 16, "prototypes": 10, **options}
    config = build_config(SwAVConfig, values, "swav")
    context = MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, dataset_size=32)
    return SwAV(create_backbone("tinycnn", 32, 3), config, context)


def test_multi_crop_views(rgb_batch: torch.Tensor) -> None:
    method = _tiny_swav(local_views=3)
    batch = method.prepare_batch(rgb_batch, None, torch.Generator().manual_seed(0))
    assert [v.images.shape for v in batch.views["global"]] == [torch.Size([16, 3, 32, 32])] * 2
    assert [v.images.shape for v in batch.views["local"]] == [torch.Size([16, 3, 14, 14])] * 3  # 32 * 96 / 224
    assert "local" not in _tiny_swav(local_views=0).view_specs()


def test_prototypes_frozen_during_first_epoch_then_trained(rgb_batch: torch.Tensor) -> None:
    method = _tiny_swav(local_views=0, freeze_prototypes_epochs=1.0)  # 32 images per epoch, batches of 16
    generator = torch.Generator().manual_seed(0)
    frozen_flags = []
    for step in range(3):
        outputs = method(method.prepare_batch(rgb_batch, None, generator))
        method.zero_grad()
        outputs["loss"].backward()
        frozen_flags.append(bool(outputs["prototypes_frozen"]))
        moved = float(method.prototypes.weight.grad.abs().sum())
        assert (moved == 0) == frozen_flags[-1]
        method.on_step_end(step, 3)
    assert frozen_flags == [True, True, False]


def test_queue_fills_from_its_start_epoch_and_is_used_once_full(rgb_batch: torch.Tensor) -> None:
    """The official code joins the queue to the codes only once its last row is written (a full queue)."""
    method = _tiny_swav(local_views=0, queue_size=24, queue_start_epoch=0.5)  # fills after 16 images
    generator = torch.Generator().manual_seed(0)
    used, filled = [], []
    for _ in range(3):
        filled.append([int(queue.filled) for queue in method.queues])
        used.append(bool(method(method.prepare_batch(rgb_batch, None, generator))["queue_used"]))
    assert filled == [[0, 0], [0, 0], [16, 16]] and used == [False, False, False]
    batch = method.prepare_batch(rgb_batch, None, generator)
    queued = [queue.items.clone() for queue in method.queues]  # full now: 24 rows each
    outputs = method(batch)
    assert bool(outputs["queue_used"])
    with torch.no_grad():  # the reference: the same embeddings, with every queued row in the partition
        z = method.embed([torch.cat([view.images for view in batch.views["global"]])])
        scores = list(method.prototypes(z).split(16))
        weight = method.prototypes.weight
        expected = method.criterion(scores, [], [rows @ weight.T for rows in queued])
    torch.testing.assert_close(outputs["loss"].detach(), expected)


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SwAVLoss(temperature=0)
    with pytest.raises(ValueError, match="sinkhorn_iterations"):
        SwAVLoss(sinkhorn_iterations=0)
    with pytest.raises(ValueError, match="count"):
        Prototypes(8, 1)
    with pytest.raises(PretrainlabError, match="local_views"):
        build_config(SwAVConfig, {"local_views": -1}, "swav")
