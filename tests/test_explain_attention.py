"""Attention statistics against brute force on constructed matrices; recomputed blocks against timm's forward;
layer classes; the nmi_had method."""

from __future__ import annotations

import math

import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.backbones.attention_maps import (
    attention_maps,
    attention_nmi,
    embed_tokens,
    mean_attention_distance,
    patch_attention,
)
from pretrainlab.explain.attention import attention_patterns, classify_layer
from pretrainlab.methods import MethodContext
from pretrainlab.methods.nmi_had import NMIHAD, NMIHADConfig, attention_kl, choose_hybrid_layer


def test_mean_attention_distance_matches_brute_force() -> None:
    grid, patch = (3, 4), 5
    generator = torch.Generator().manual_seed(0)
    attention = torch.rand(2, 12, 12, generator=generator).softmax(dim=-1)  # (heads, N, N)
    expected = torch.zeros(2)
    for head in range(2):
        total = 0.0
        for query in range(12):
            for key in range(12):
                dy = (query // 4 - key // 4) * patch
                dx = (query % 4 - key % 4) * patch
                total += float(attention[head, query, key]) * math.hypot(dy, dx)
        expected[head] = total / 12
    assert torch.allclose(mean_attention_distance(attention, grid, patch).float(), expected, atol=1e-5)


def test_nmi_of_constructed_patterns() -> None:
    count = 16
    assert float(attention_nmi(torch.eye(count))) == pytest.approx(1.0)  # each query attends only to itself
    assert float(attention_nmi(torch.full((count, count), 1 / count))) == pytest.approx(0.0, abs=1e-9)
    same_keys = torch.zeros(count, count)
    same_keys[:, 3] = 1.0  # every query attends to one shared key: global
    assert float(attention_nmi(same_keys)) == pytest.approx(0.0, abs=1e-9)
    mixed = 0.5 * torch.eye(count) + 0.5 * same_keys  # half local, half shared: in between
    assert 0.1 < float(attention_nmi(mixed)) < 0.9
    assert [classify_layer(v) for v in (0.5, 0.2, 0.01)] == ["local", "hybrid", "global"]


def test_recomputed_blocks_reproduce_timms_forward() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("vit_nano_patch4", 32, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps, grid = attention_maps(backbone.model, x)
        tokens, _ = embed_tokens(backbone.model, x)
        for block in backbone.model.blocks:
            tokens = block(tokens)
        assert torch.allclose(backbone.model.norm(tokens), backbone.model.forward_features(x), atol=1e-5)
    assert grid == (8, 8) and len(maps) == 4 and maps[0].shape == (2, 4, 65, 65)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 4, 65), atol=1e-5)
    patterns = attention_patterns(backbone, [x])
    assert patterns.distance.shape == (4, 4) and patterns.nmi.shape == (4, 4) and len(patterns.classes) == 4
    assert patterns.example.shape == (4, 4, 64, 64) and patterns.cls_attention.shape == (4, 4, 64)


def test_patch_attention_drops_prefix_and_renormalises() -> None:
    probabilities = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.0, 0.5, 0.5]])
    assert torch.allclose(patch_attention(probabilities, 1), torch.tensor([[0.25, 0.75], [0.5, 0.5]]))


def test_hybrid_layer_choice_and_kl() -> None:
    assert choose_hybrid_layer([0.5, 0.2, 0.15, 0.05]) == 2  # the deepest in the band
    assert choose_hybrid_layer([0.9, 0.35, 0.01]) == 1  # none in the band: the closest to its middle (0.2)
    attention = torch.rand(2, 3, 5, 5).softmax(-1)
    assert float(attention_kl(attention, attention)) == pytest.approx(0.0, abs=1e-6)
    assert float(attention_kl(attention, torch.full_like(attention, 0.2))) > 0


def test_nmi_had_student_equal_to_its_teacher_has_zero_loss(tmp_path) -> None:
    from pretrainlab.backbones import save_backbone

    torch.manual_seed(0)
    teacher = create_backbone("vit_nano_patch4", 32, 3)
    (tmp_path / "teacher").mkdir()
    save_backbone(teacher, tmp_path / "teacher" / "backbone.safetensors")
    student = create_backbone("vit_nano_patch4", 32, 3)
    student.model.load_state_dict(teacher.model.state_dict())
    context = MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    method = NMIHAD(student, NMIHADConfig(teacher=str(tmp_path / "teacher"), teacher_layer=3), context)
    batch = method.prepare_batch(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8), None,
                                 torch.Generator().manual_seed(0))
    assert float(method(batch)["loss"].detach()) == pytest.approx(0.0, abs=1e-5)
    chosen = NMIHAD(create_backbone("vit_nano_patch4", 32, 3), NMIHADConfig(teacher=str(tmp_path / "teacher")), context)
    outputs = chosen(batch)
    assert 0 <= int(chosen.layer) < 4 and float(outputs["loss"].detach()) > 0
