"""Selfie: patch cutting, the patch-selection loss against a naive loop, option checks, a training step."""

from __future__ import annotations

import math

import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads.attention_pooling import RowColumnEmbedding
from pretrainlab.losses.patch_selection import patch_selection_loss
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.methods.selfie import split_patches


def test_split_patches_is_row_major_and_exact() -> None:
    images = torch.randn(2, 3, 12, 12)
    patches = split_patches(images, 3)  # (2, 9, 3, 4, 4)
    assert patches.shape == (2, 9, 3, 4, 4)
    for index in range(9):
        row, column = divmod(index, 3)
        assert torch.equal(patches[:, index], images[:, :, row * 4 : row * 4 + 4, column * 4 : column * 4 + 4])


def naive_selection_loss(queries: torch.Tensor, candidates: torch.Tensor) -> float:
    """For every image and masked location: -log softmax over that image's masked patches, at the true one."""
    total, count = 0.0, 0
    for b in range(queries.shape[0]):
        for i in range(queries.shape[1]):
            scores = [float(queries[b, i] @ candidates[b, j]) for j in range(candidates.shape[1])]
            log_normaliser = math.log(sum(math.exp(s) for s in scores))
            total += log_normaliser - scores[i]
            count += 1
    return total / count


def test_patch_selection_loss_matches_a_naive_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
    candidates = torch.randn(3, 4, 5, generator=generator, dtype=torch.float64)
    loss, accuracy = patch_selection_loss(queries, candidates)
    assert float(loss) == pytest.approx(naive_selection_loss(queries, candidates))
    assert 0.0 <= float(accuracy) <= 1.0


def test_patch_selection_distractors_come_from_the_same_image_only() -> None:
    """Changing another image's patches must not change an image's loss terms."""
    queries = torch.randn(2, 3, 4, dtype=torch.float64)
    candidates = torch.randn(2, 3, 4, dtype=torch.float64)
    alone, _ = patch_selection_loss(queries[:1], candidates[:1])
    changed = candidates.clone()
    changed[1] = 100 * torch.randn(3, 4, dtype=torch.float64)
    both, _ = patch_selection_loss(queries, changed)
    other, _ = patch_selection_loss(queries[1:], changed[1:])
    assert float(both) == pytest.approx((float(alone) + float(other)) / 2)


def test_perfect_queries_give_full_accuracy() -> None:
    candidates = torch.eye(4, dtype=torch.float64)[None] * 10  # (1, 4, 4) well-separated patches
    loss, accuracy = patch_selection_loss(candidates.clone(), candidates)
    assert float(accuracy) == 1.0 and float(loss) < 1e-3


def test_row_column_embedding_is_a_sum() -> None:
    embedding = RowColumnEmbedding(3, 6)
    index = torch.tensor([[0, 5, 7]])
    expected = torch.stack([embedding.row[0] + embedding.column[0], embedding.row[1] + embedding.column[2],
                            embedding.row[2] + embedding.column[1]])
    assert torch.allclose(embedding(index)[0], expected)


def make_selfie(img_size: int = 32, **options):
    method_class = METHODS.get("selfie")
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, "selfie")
    context = MethodContext(img_size=img_size, in_chans=1, mean=(0.5,), std=(0.25,))
    return method_class(create_backbone("tinycnn", img_size, 1), config, context)


def test_selfie_rejects_ratios_without_a_choice_and_tiny_patches() -> None:
    with pytest.raises(PretrainlabError, match="at least 2 masked"):
        make_selfie(mask_ratio=0.05)
    with pytest.raises(PretrainlabError, match="1 visible"):
        make_selfie(mask_ratio=1.0)
    with pytest.raises(PretrainlabError, match="patches of at least"):
        make_selfie(grid=16)


def test_selfie_on_28_px_uses_a_4x4_grid_of_7_px_patches(rgb_batch: torch.Tensor) -> None:
    method = make_selfie(img_size=28)
    images = rgb_batch[:, :28, :28, :1]
    batch = method.prepare_batch(images, None, torch.Generator().manual_seed(0))
    assert batch.views["base"][0].images.shape == (16, 1, 28, 28)
    outputs = method(batch)
    outputs["loss"].backward()
    # 4 masked patches per image: the loss starts near log(4), the accuracy of a random pick is 1/4.
    assert 0.5 < float(outputs["loss"].detach()) < 5.0
    assert all(p.grad is not None for p in method.pooling.parameters())
    assert method.positions.row.grad is not None


def test_attention_pooling_ignores_the_order_of_patches_without_positions() -> None:
    from pretrainlab.heads.attention_pooling import AttentionPooling

    pooling = AttentionPooling(8, depth=2, num_heads=2).eval()
    patches = torch.randn(2, 5, 8)
    order = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(pooling(patches), pooling(patches[:, order]), atol=1e-5)


@pytest.mark.parametrize("visible_positions", [False, True])
def test_selfie_position_embeddings_reach_the_loss(visible_positions: bool, rgb_batch: torch.Tensor) -> None:
    method = make_selfie(visible_positions=visible_positions)
    batch = method.prepare_batch(rgb_batch[..., :1], None, torch.Generator().manual_seed(0))
    method(batch)["loss"].backward()
    assert float(method.positions.row.grad.abs().sum()) > 0  # the queries always carry their location
