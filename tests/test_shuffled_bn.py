"""MoCo's shuffled batch norm: split groups with their own statistics, shuffled keys (the DDP shuffle and unshuffle:
tests/test_ddp_momentum_losses.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from test_momentum_methods import make_method, naive_info_nce

from pretrainlab.data.views import Views
from pretrainlab.methods import Batch
from pretrainlab.methods.parts.shuffled_bn import group_factor, shuffled_encode, split_encode


def small_encoder() -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers).train()


@pytest.mark.parametrize("momentum", [0.1, None])
def test_split_encode_equals_each_group_on_its_own_with_one_running_update(momentum: float | None) -> None:
    encoder = small_encoder()
    norm = encoder[1]
    norm.momentum = momentum
    norm.num_batches_tracked.fill_(3)
    norm.running_mean.uniform_(-1, 1)
    before_mean, before_var = norm.running_mean.clone(), norm.running_var.clone()
    reference = copy.deepcopy(encoder)
    images = torch.randn(16, 3, 8, 8, requires_grad=True)
    output = split_encode(encoder, encoder, images, splits=4)
    output.sum().backward()  # the running-statistics bookkeeping must not break autograd
    groups = images.detach().split(4)
    expected = torch.cat([reference(group) for group in groups])  # each group a separate forward: its own BN
    torch.testing.assert_close(output.detach(), expected)
    assert not torch.allclose(output.detach(), copy.deepcopy(reference)(images.detach()))
    with torch.no_grad():  # SplitBatchNorm's single update: (1 - m) r + m * mean over groups of their statistics
        conv = [reference[0](group) for group in groups]
        means = torch.stack([c.mean(dim=(0, 2, 3)) for c in conv]).mean(dim=0)
        variances = torch.stack([c.var(dim=(0, 2, 3), unbiased=True) for c in conv]).mean(dim=0)
    factor = momentum if momentum is not None else 1 / 4
    torch.testing.assert_close(norm.running_mean, (1 - factor) * before_mean + factor * means)
    torch.testing.assert_close(norm.running_var, (1 - factor) * before_var + factor * variances)
    assert int(norm.num_batches_tracked) == 4 and norm.momentum == momentum


def test_group_factors_weigh_every_group_equally() -> None:
    momentum, groups = 0.3, 5
    weights, remaining = [], 1.0
    for index in reversed(range(1, groups + 1)):  # the weight of group k's statistics in the final running value
        factor = group_factor(momentum, index, groups)
        weights.append(factor * remaining)
        remaining *= 1 - factor
    assert weights == pytest.approx([momentum / groups] * groups) and remaining == pytest.approx(1 - momentum)


def test_shuffled_encode_encodes_random_groups_and_restores_the_order() -> None:
    encoder = small_encoder()
    reference = copy.deepcopy(encoder)
    images = torch.randn(16, 3, 8, 8)
    keys = shuffled_encode(encoder, encoder, images, 4, torch.Generator().manual_seed(7))
    permutation = torch.randperm(16, generator=torch.Generator().manual_seed(7))
    encoded = torch.cat([reference(group) for group in images[permutation].split(4)])  # shuffled order
    expected = torch.empty_like(encoded)
    expected[permutation] = encoded  # back to the images' order
    torch.testing.assert_close(keys, expected)
    linear = nn.Linear(5, 3)  # without batch norm the shuffle changes nothing: same keys, same order
    rows = torch.randn(16, 5)
    torch.testing.assert_close(shuffled_encode(linear, linear, rows, 4, torch.Generator().manual_seed(1)),
                               linear(rows).detach())


def mocov2_batch(query: torch.Tensor, key: torch.Tensor, seed: int) -> Batch:
    views = [Views(x, torch.zeros(len(x), 4), torch.zeros(len(x), dtype=torch.bool)) for x in (query, key)]
    return Batch(views={"global": views}, images=query, generator=torch.Generator().manual_seed(seed))


def test_mocov2_queries_in_order_groups_and_keys_in_shuffled_groups() -> None:
    method = make_method("mocov2", queue_size=20, bn_splits=4).train()
    assert method.config.shuffle_bn  # on by default, as in the paper
    query_images, key_images = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    old_queue = method.queue.items.clone()
    reference = copy.deepcopy(method)
    loss = method(mocov2_batch(query_images, key_images, seed=3))["loss"]
    with torch.no_grad():
        queries = torch.cat([reference.projector(reference.backbone.pooled(g)) for g in query_images.split(2)])
        permutation = torch.randperm(8, generator=torch.Generator().manual_seed(3))
        teacher = reference.key_encoder
        shuffled = torch.cat([teacher["projector"](teacher["backbone"].pooled(group))
                              for group in key_images[permutation].split(2)])
        keys = torch.empty_like(shuffled)
        keys[permutation] = shuffled
    torch.testing.assert_close(loss.detach(), naive_info_nce(queries, keys, old_queue, 0.2), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(method.queue.items[:8], nn.functional.normalize(keys, dim=1), rtol=1e-4, atol=1e-5)
