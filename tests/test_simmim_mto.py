"""Masked token optimisation on SimMIM's encoder: timm's own blocks with the bias, loss vs a naive loop, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.backbones.vit_parts import (
    add_patch_positions,
    patch_embed_any_size,
    patchify,
    prefix_tokens,
    replace_masked_tokens,
)
from pretrainlab.cli import main
from pretrainlab.config import build_config
from pretrainlab.data.masks import coarse_patch_mask
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods import METHODS, MethodContext


def tiny_simmim(backbone: str = "vit_nano_patch4", **options: object):  # noqa: ANN201
    config = build_config(METHODS.get("simmim").config_class, options, "simmim")
    context = MethodContext(img_size=32, in_chans=1, mean=(0.5,), std=(0.25,))
    return METHODS.get("simmim")(create_backbone(backbone, 32, 1), config, context)


def naive_mask_to_mask_mass(block: torch.nn.Module, x: torch.Tensor, is_mask: torch.Tensor) -> torch.Tensor:
    """Attention recomputed by hand from the block's qkv weights; mean over (b, h, mask query) of mass on mask keys."""
    attention = block.attn
    heads, head_dim = attention.num_heads, attention.head_dim
    values = []
    normed = block.norm1(x)
    for b in range(x.shape[0]):
        qkv = attention.qkv(normed[b]).reshape(x.shape[1], 3, heads, head_dim)  # (L, 3, H, d)
        for h in range(heads):
            query, key = qkv[:, 0, h], qkv[:, 1, h]
            for q in range(x.shape[1]):
                if not is_mask[b, q]:
                    continue
                logits = (key @ query[q]) / head_dim**0.5  # (L,); mask queries see every key
                values.append(logits.softmax(0)[is_mask[b]].sum())
    return torch.stack(values).mean()


def test_simmim_mto_runs_timms_blocks_with_the_recalibration_and_adds_the_naive_loss() -> None:
    method = tiny_simmim(mto=0.5).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 1, 32, 32, generator=generator)
    mask = coarse_patch_mask(2, (8, 8), 2, 0.6, generator)
    encoded, mto_loss = method.encode(images, mask)

    vit = method.backbone.model
    tokens, grid = patch_embed_any_size(vit, images)
    tokens = torch.cat([prefix_tokens(vit, 2), add_patch_positions(vit, replace_masked_tokens(
        tokens, mask, method.mask_token), grid)], dim=1)  # (B, 1 + N, D)
    is_mask = torch.cat([torch.zeros(2, 1, dtype=torch.bool), mask], dim=1)
    allowed = ~(~is_mask[:, :, None] & is_mask[:, None, :])  # visible query x mask key is forbidden
    masses = []
    with torch.no_grad():
        for block in vit.blocks:
            masses.append(naive_mask_to_mask_mass(block, tokens, is_mask))
            tokens = block(tokens, attn_mask=allowed.unsqueeze(1))  # timm's own forward with a bool mask
        torch.testing.assert_close(encoded, vit.norm(tokens))
        torch.testing.assert_close(mto_loss, torch.stack(masses).mean())
        torch.testing.assert_close(encoded, method.encode(images, mask)[0])

    batch = method.prepare_batch(torch.randint(0, 256, (4, 32, 32, 1), dtype=torch.uint8, generator=generator),
                                 None, torch.Generator().manual_seed(1))
    state = batch.generator.get_state()
    outputs = method(batch)
    batch.generator.set_state(state)
    view = batch.views["base"][0].images
    again_mask = method.draw_mask(4, batch.generator, view.device)
    encoded, expected_mto = method.encode(view, again_mask)
    reconstruction = masked_patch_loss(method.decoder(encoded[:, 1:]), patchify(view, 4), again_mask, False,
                                       "absolute")
    torch.testing.assert_close(outputs["mto_loss"], expected_mto.detach())
    torch.testing.assert_close(outputs["loss"], reconstruction + 0.5 * expected_mto)


def test_simmim_without_mto_is_unchanged_and_mto_gives_the_encoder_a_gradient() -> None:
    plain = tiny_simmim().eval()
    with_mto = tiny_simmim(mto=1.0, mto_exclude=False).eval()
    with_mto.load_state_dict(plain.state_dict())
    images = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    mask = coarse_patch_mask(2, (8, 8), 2, 0.6, torch.Generator().manual_seed(3))
    encoded, zero = plain.encode(images, mask)
    assert float(zero) == 0.0
    # without the recalibration, MTO's forward is the plain forward; only its extra loss differs
    torch.testing.assert_close(with_mto.encode(images, mask)[0], encoded, atol=1e-5, rtol=1e-4)
    _, loss = with_mto.encode(images, mask)
    (gradient,) = torch.autograd.grad(loss, [with_mto.backbone.model.blocks[0].attn.qkv.weight])
    assert float(gradient.abs().sum()) > 0


def test_simmim_mto_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PretrainlabError, match="mto must be >= 0"):
        tiny_simmim(mto=-0.1)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", images=images)
    code = main(["pretrain", "--method", "simmim", "--backbone", "vit_nano_patch4", "--data",
                 f"npz:{tmp_path / 'tiny.npz'}", "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress",
                 "--option", "mto=-1"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error:") and "mto" in error and "\n" not in error
    assert not (tmp_path / "run" / "backbone.safetensors").exists()


def test_simmim_mto_refuses_blocks_it_cannot_read() -> None:
    method = tiny_simmim()
    method.backbone.model.blocks[0] = torch.nn.Identity()
    with pytest.raises(PretrainlabError, match="plain timm ViT"):
        METHODS.get("simmim")(method.backbone, build_config(METHODS.get("simmim").config_class, {"mto": 0.1},
                                                            "simmim"), method.context)
