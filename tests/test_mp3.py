"""MP3: the encoder has no position information, context masking hides keys, labels are grid positions,
and the exported backbone is a standard timm ViT whose ordinary forward is the trained encoder."""

from __future__ import annotations

from pathlib import Path

import torch

from pretrainlab.backbones import create_backbone, load_backbone, save_backbone
from pretrainlab.backbones.vit_parts import encode_tokens, patch_embed_any_size, patchify, unpatchify
from pretrainlab.config import build_config
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.methods.mp3 import context_attention_mask

GRID = (8, 8)


def make_mp3(**options):
    method_class = METHODS.get("mp3")
    config = build_config(method_class.config_class, options, "mp3")
    context = MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    return method_class(create_backbone("vit_nano_patch4", 32, 3), config, context)


def shuffle_patches(images: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rearranges the 4x4 patches of images (B, 3, 32, 32): patch n of the result is patch order[n]."""
    return unpatchify(patchify(images, 4)[:, order], 4, 3, GRID)


def test_encoder_has_no_position_information() -> None:
    method = make_mp3().eval()
    images = torch.randn(2, 3, 32, 32)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    context = torch.rand(2, 64, generator=torch.Generator().manual_seed(1)) > 0.5
    plain = method.encode(images, context)
    shuffled = method.encode(shuffle_patches(images, order), context[:, order])
    assert torch.allclose(shuffled, plain[:, order], atol=1e-5)  # permutation-equivariant: content only


def test_tokens_outside_the_context_influence_only_themselves() -> None:
    method = make_mp3().eval()
    images = torch.randn(1, 3, 32, 32)
    context = torch.ones(1, 64, dtype=torch.bool)
    context[0, 10] = False
    changed = images.clone()
    changed[:, :, 4:8, 8:12] += 3.0  # patch 10 (row 1, column 2)
    before, after = method.encode(images, context), method.encode(changed, context)
    differs = (before - after).abs().amax(dim=-1)[0] > 1e-5
    assert differs.nonzero().flatten().tolist() == [10]


def test_attention_mask_keeps_prefix_and_context_keys() -> None:
    context = torch.tensor([[True, False, True]])
    mask = context_attention_mask(context, num_prefix=1)
    assert mask.shape == (1, 1, 4, 4)
    assert mask[0, 0].tolist() == [[True, True, False, True]] * 4


def test_loss_is_cross_entropy_over_grid_positions() -> None:
    method = make_mp3().train()
    images = torch.randn(3, 3, 32, 32)
    context = torch.rand(3, 64) > 0.75
    logits = method.position_logits(images, context)
    assert logits.shape == (3, 64, 64)
    naive = 0.0
    for b in range(3):
        for n in range(64):
            naive = naive - torch.log_softmax(logits[b, n], dim=0)[n]
    naive = naive / (3 * 64)
    labels = torch.arange(64).expand(3, -1)
    assert torch.allclose(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()), naive, atol=1e-5)
    batch = method.prepare_batch(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8), None,
                                 torch.Generator().manual_seed(0))
    outputs = method(batch)
    assert 0.0 <= float(outputs["position_accuracy"]) <= 1.0
    assert abs(float(outputs["loss"].detach()) - torch.log(torch.tensor(64.0)).item()) < 1.5  # near chance at init


def test_pos_embed_stays_zero_and_export_runs_the_trained_encoder(tmp_path: Path) -> None:
    method = make_mp3().train()
    vit = method.backbone.model
    assert not vit.pos_embed.requires_grad and float(vit.pos_embed.abs().max()) == 0.0
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    batch = method.prepare_batch(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8), None,
                                 torch.Generator().manual_seed(0))
    method(batch)["loss"].backward()
    optimizer.step()
    assert float(vit.pos_embed.abs().max()) == 0.0
    save_backbone(method.backbone, tmp_path / "backbone.safetensors")
    exported = load_backbone(tmp_path / "backbone.safetensors").eval()
    assert float(exported.model.pos_embed.detach().abs().max()) == 0.0
    images = torch.randn(2, 3, 32, 32)
    method.eval()
    tokens, _ = patch_embed_any_size(vit, images)
    expected = encode_tokens(vit, tokens)  # the position-free encoder, every patch in the context
    assert torch.allclose(exported.model.forward_features(images), expected, atol=1e-5)
