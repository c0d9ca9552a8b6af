"""Matryoshka / Starbucks: the loss against loop references on slices, nested depths, SMAE, size selection."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrainlab.backbones import create_backbone
from pretrainlab.backbones.selected import NestedBackbone
from pretrainlab.backbones.vit_parts import gather_tokens, patch_embed_with_pos, patchify
from pretrainlab.config import build_config
from pretrainlab.data.masks import keep_indices, random_patch_mask
from pretrainlab.data.source import ImageSource
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.similarity_kl import similarity_kl
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.methods.matryoshka import Matryoshka
from pretrainlab.methods.parts.starbucks_mae import NestedMaskedAutoencoding
from pretrainlab.pipeline import build_run_config, evaluate_backbone, pretrain

HEAD = {"hidden_dim": 32, "projection_dim": 16, "temperature": 0.5}


def make(backbone_name: str = "tinycnn", in_chans: int = 3, **options: object) -> Matryoshka:
    backbone = create_backbone(backbone_name, 32, in_chans)
    config = build_config(Matryoshka.config_class, {"base_options": HEAD, **options}, "matryoshka")
    context = MethodContext(img_size=32, in_chans=in_chans, mean=(0.5,) * in_chans, std=(0.25,) * in_chans)
    return Matryoshka(backbone, config, context)


def loop_ntxent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> float:
    z = F.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    count, half, total = z.shape[0], z.shape[0] // 2, 0.0
    for anchor in range(count):
        logits = {other: float(z[anchor] @ z[other]) / temperature for other in range(count) if other != anchor}
        total += -logits[(anchor + half) % count] + math.log(sum(math.exp(v) for v in logits.values()))
    return total / count


def loop_similarity_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    """KL(p_teacher || p_student) per row over the other rows' cosine similarities, averaged over rows."""
    student, teacher = F.normalize(student.double(), dim=1), F.normalize(teacher.double(), dim=1)
    count, total = student.shape[0], 0.0
    for row in range(count):
        others = [other for other in range(count) if other != row]
        s = torch.softmax(torch.stack([student[row] @ student[j] for j in others]) / temperature, 0)
        t = torch.softmax(torch.stack([teacher[row] @ teacher[j] for j in others]) / temperature, 0)
        total += float((t * (t / s).log()).sum())
    return total / count


@pytest.mark.parametrize("kl_weight", [0.0, 0.7])
def test_loss_is_weighted_sum_of_base_losses_on_prefix_slices(kl_weight: float, rgb_batch: torch.Tensor) -> None:
    weights = [0.5, 0.3, 0.2]
    method = make(pairs=[[-1, 8], [-1, 32], [-1, -1]], weights=weights, kl_weight=kl_weight, kl_temperature=0.4)
    method.train()
    batch = method.prepare_batch(rgb_batch, None, torch.Generator().manual_seed(2))
    loss = float(method(batch)["loss"].detach())
    view_a, view_b = batch.views["global"]
    expected = 0.0
    with torch.no_grad():
        features = method.backbone.pooled(torch.cat([view_a.images, view_b.images]))  # (2B, 128)
        for weight, base, dim in zip(weights, method.bases, [8, 32, 128], strict=True):
            z_a, z_b = base.projection(features[:, :dim]).chunk(2)
            kl = loop_similarity_kl(features[:, :dim], features, 0.4) if dim != 128 else 0.0
            expected += weight * (loop_ntxent(z_a, z_b, 0.5) + kl_weight * kl)
    assert loss == pytest.approx(expected, rel=1e-4)


def test_similarity_kl_matches_loop_reference() -> None:
    student, teacher = torch.randn(12, 8), torch.randn(12, 32)  # unrelated, so the KL is large and asymmetric
    value = float(similarity_kl(student, teacher, 0.2))
    assert value == pytest.approx(loop_similarity_kl(student, teacher, 0.2), rel=1e-5)
    assert value > 0.1 and value != pytest.approx(loop_similarity_kl(teacher, student, 0.2), rel=1e-2)
    teacher.requires_grad_(True)
    similarity_kl(student.requires_grad_(True), teacher, 0.2).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0  # the larger embedding is a fixed target


def test_one_backbone_pass_serves_every_pair(rgb_batch: torch.Tensor) -> None:
    method = make("vit_nano_patch4", pairs=[[1, 16], [2, 32], [-1, -1]])
    calls = []
    method.backbone.model.patch_embed.register_forward_hook(lambda *_: calls.append(1))
    batch = method.prepare_batch(rgb_batch, None, torch.Generator().manual_seed(0))
    outputs = method(batch)
    assert len(calls) == 1  # SimCLR embeds both views at once; every pair reads that one pass
    assert set(outputs) >= {"loss", "loss_layer1,dim16", "loss_layer2,dim32", "loss_dim128", "kl"}
    outputs["loss"].backward()
    assert method.backbone.model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_nested_depth_features_match_timm_intermediates() -> None:
    backbone = create_backbone("vit_nano_patch4", 32, 1).eval()
    images = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        patch_tokens = backbone.model.forward_intermediates(images, indices=[1], output_fmt="NLC",
                                                            intermediates_only=True, norm=False)[0]  # after block 2
        expected = backbone.model.fc_norm(patch_tokens.mean(dim=1))[:, :16]  # the model's mean pooling + fc_norm
        assert torch.allclose(NestedBackbone(backbone, 2, 16).pooled(images), expected, atol=1e-5)
        assert torch.allclose(NestedBackbone(backbone, 4, 16).pooled(images), backbone.pooled(images)[:, :16])


def test_representations_name_every_trained_size() -> None:
    method = make("vit_nano_patch4", in_chans=1, pairs=[[1, 16], [-1, 64]]).eval()
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        named = method.representations(images)
        assert list(named) == ["backbone", "layer1,dim16", "dim64"]
        assert torch.allclose(named["layer1,dim16"], NestedBackbone(method.backbone, 1, 16).pooled(images))
        assert torch.allclose(named["dim64"], named["backbone"][:, :64])


def test_masked_autoencoding_matches_loop_reference_and_stops_at_its_layer() -> None:
    backbone = create_backbone("vit_nano_patch4", 32, 1)
    smae = NestedMaskedAutoencoding(backbone, [(1, 16)], in_chans=1, mask_ratio=0.75, decoder_dim=32,
                                    decoder_depth=1, decoder_heads=2)
    images = torch.randn(4, 1, 32, 32)
    loss = smae(backbone, images, torch.Generator().manual_seed(5))
    loss.backward()
    assert backbone.model.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert all(block.mlp.fc1.weight.grad is None for block in backbone.model.blocks[1:])

    vit = backbone.model
    with torch.no_grad():
        mask = random_patch_mask(4, 64, 0.75, torch.Generator().manual_seed(5), images.device)
        visible_index, _ = keep_indices(mask)
        tokens = gather_tokens(patch_embed_with_pos(vit, images), visible_index)
        tokens = torch.cat([vit.cls_token.expand(4, -1, -1) + vit.pos_embed[:, :1], tokens], dim=1)
        tokens = vit.norm(vit.blocks[0](vit.norm_pre(tokens)))[:, 1:, :16]  # block 1 only, first 16 channels
        padded = torch.cat([tokens, torch.zeros(4, tokens.shape[1], 128 - 16)], dim=2)
        prediction = smae.decoder(padded, visible_index, 64)
        target = patchify(images, 4)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        per_patch = (prediction - target).pow(2).mean(-1)
        expected = float(per_patch[mask].mean())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"pairs": [[-1, 256]]}, "dim 256 is out of range"),
    ({"pairs": [[2, 16]]}, "convolutional"),
    ({"pairs": [[-1, 16], [-1, 16]]}, "distinct"),
    ({"pairs": [[-1, 16]], "weights": [1.0, 2.0]}, "one value per pair"),
    ({"base": "mae"}, "pooled embedding"),
    ({"base": "simclrr"}, "simclr"),
    ({"masked_weight": 1.0}, "vision transformer"),
])
def test_bad_settings_raise_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises(PretrainlabError, match=message):
        make(**options)


def test_a_trained_size_evaluates_by_name(builtin_source, tmp_path: Path) -> None:
    source = ImageSource("builtin", builtin_source.train.subset(np.arange(0, 4000, 40)),
                         builtin_source.test.subset(np.arange(0, 1000, 20)), builtin_source.classes,
                         split_note=builtin_source.split_note)
    config = build_run_config("matryoshka", {"backbone": "tinycnn", "out": str(tmp_path / "run")},
                              {"epochs": 1, "batch_size": 50, "warmup_epochs": 0, "knn_every": 0},
                              {"base_options": HEAD, "pairs": [[-1, 8], [-1, -1]]})
    pretrain(config, show_progress=False, source=source)
    assert METHODS.get(config.method) is Matryoshka
    result = evaluate_backbone(f"{tmp_path / 'run'}@dim8", "builtin", ["knn"], device="cpu", source=source)[0]
    assert result.backbone.endswith("@dim8") and 0.0 <= result.value <= 100.0
    assert result.settings["k"] > 0
