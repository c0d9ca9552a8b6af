"""Pretext regularisation: rotation and jigsaw transforms against naive loops, the Hamming permutation set,
and how the wrapper composes with a registered base method."""

from __future__ import annotations

import itertools

import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.data.pretext_transforms import hamming_permutations, rotate_each, shuffle_tiles
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods import METHODS, MethodContext


def test_rotate_each_turns_every_image_by_its_own_angle() -> None:
    images = torch.randn(5, 2, 6, 6)
    turns = torch.tensor([0, 1, 2, 3, 1])
    rotated = rotate_each(images, turns)
    for b in range(5):
        expected = images[b]
        for _ in range(int(turns[b])):
            expected = torch.rot90(expected, 1, dims=(1, 2))
        assert torch.equal(rotated[b], expected)


def test_shuffle_tiles_matches_a_naive_tile_copy() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(3, 2, 9, 9, generator=generator)
    permutations = torch.stack([torch.randperm(9, generator=generator) for _ in range(3)])
    shuffled = shuffle_tiles(images, 3, permutations)
    for b in range(3):
        for position in range(9):
            source = int(permutations[b, position])
            out_row, out_col = divmod(position, 3)
            in_row, in_col = divmod(source, 3)
            assert torch.equal(shuffled[b, :, out_row * 3 : out_row * 3 + 3, out_col * 3 : out_col * 3 + 3],
                               images[b, :, in_row * 3 : in_row * 3 + 3, in_col * 3 : in_col * 3 + 3])


def test_shuffle_with_identity_is_a_no_op_and_the_inverse_restores() -> None:
    images = torch.randn(2, 1, 8, 8)
    identity = torch.arange(4).repeat(2, 1)
    assert torch.equal(shuffle_tiles(images, 2, identity), images)
    permutation = torch.tensor([[2, 0, 3, 1], [1, 3, 0, 2]])
    inverse = permutation.argsort(dim=1)
    assert torch.equal(shuffle_tiles(shuffle_tiles(images, 2, permutation), 2, inverse), images)


def naive_hamming_set(num_tiles: int, count: int, seed: int) -> list[tuple[int, ...]]:
    """Noroozi and Favaro's Algorithm 1 with Python lists: maximise the summed distance to the chosen set."""
    candidates = list(itertools.permutations(range(num_tiles)))
    generator = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(candidates), (1,), generator=generator))]
    while len(chosen) < count:
        best, best_score = None, -1
        for index, candidate in enumerate(candidates):
            if index in chosen:
                continue
            score = sum(sum(a != b for a, b in zip(candidate, candidates[c], strict=True)) for c in chosen)
            if score > best_score:
                best, best_score = index, score
        chosen.append(best)
    return [candidates[i] for i in chosen]


@pytest.mark.parametrize(("num_tiles", "count"), [(4, 10), (5, 12)])
def test_hamming_permutations_match_the_greedy_algorithm(num_tiles: int, count: int) -> None:
    selected = hamming_permutations(num_tiles, count, seed=3)
    assert [tuple(row) for row in selected.tolist()] == naive_hamming_set(num_tiles, count, seed=3)


def test_large_grids_sample_distinct_valid_permutations() -> None:
    selected = hamming_permutations(16, 20, seed=0)  # 16! candidates: a sampled pool
    assert selected.shape == (20, 16)
    assert all(sorted(row) == list(range(16)) for row in selected.tolist())
    assert len({tuple(row) for row in selected.tolist()}) == 20
    with pytest.raises(PretrainlabError, match="num_permutations"):
        hamming_permutations(4, 25)


def make_method(img_size: int = 32, in_chans: int = 3, **options):
    method_class = METHODS.get("pretext_reg")
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, "pretext_reg")
    context = MethodContext(img_size=img_size, in_chans=in_chans, mean=(0.5,) * in_chans, std=(0.25,) * in_chans,
                            num_classes=10)
    return method_class(create_backbone("tinycnn", img_size, in_chans), config, context)


def test_total_loss_is_base_plus_weighted_pretext_losses(rgb_batch: torch.Tensor) -> None:
    method = make_method(rotation_weight=0.3, jigsaw_weight=0.7)
    batch = method.prepare_batch(rgb_batch, None, torch.Generator().manual_seed(0))
    assert set(batch.views) == {"global", "pretext_rotation", "pretext_jigsaw"}
    assert len(batch.views["global"]) == 2  # the base's two SimCLR views are untouched
    outputs = method(batch)
    expected = outputs["base_loss"] + 0.3 * outputs["rotation_loss"] + 0.7 * outputs["jigsaw_loss"]
    assert torch.allclose(outputs["loss"].detach(), expected)
    assert method.base.backbone is method.backbone
    assert len(list(method.parameters())) == len({id(p) for p in method.parameters()})


def test_one_task_only_and_28_px_with_a_3x3_grid(rgb_batch: torch.Tensor) -> None:
    method = make_method(img_size=28, in_chans=1, rotation_weight=0.0, jigsaw_grid=3, num_permutations=10)
    batch = method.prepare_batch(rgb_batch[:, :28, :28, :1], None, torch.Generator().manual_seed(0))
    assert batch.views["pretext_jigsaw"][0].images.shape[-1] == 27  # 3 tiles of 9 px, resized back for the net
    outputs = method(batch)
    assert "rotation_loss" not in outputs and "jigsaw_loss" in outputs
    assert not hasattr(method, "rotation_head")


def test_wrapper_forwards_step_end_and_representations_to_the_base(rgb_batch: torch.Tensor) -> None:
    method = make_method()
    calls = []
    method.base.on_step_end = lambda step, total: calls.append((step, total))
    method.on_step_end(3, 10)
    assert calls == [(3, 10)]
    method.eval()
    images = torch.randn(4, 3, 32, 32)
    ours, base = method.representations(images), method.base.representations(images)
    assert ours.keys() == base.keys() and all(torch.equal(ours[k], base[k]) for k in ours)


def test_another_base_method_composes(rgb_batch: torch.Tensor) -> None:
    method = make_method(base="rotnet", base_options={"hidden_dim": 16})
    batch = method.prepare_batch(rgb_batch, None, torch.Generator().manual_seed(0))
    outputs = method(batch)
    assert "rotation_accuracy" in outputs and torch.isfinite(outputs["loss"])


def test_bad_compositions_raise_clear_errors() -> None:
    with pytest.raises(PretrainlabError, match="did you mean 'simclr'"):
        make_method(base="simclrr")
    with pytest.raises(PretrainlabError, match="cannot wrap itself"):
        make_method(base="pretext_reg")
    with pytest.raises(PretrainlabError, match="rotation_weight or jigsaw_weight"):
        make_method(rotation_weight=0.0, jigsaw_weight=0.0)
    with pytest.raises(PretrainlabError, match="temprature"):
        make_method(base_options={"temprature": 0.2})
