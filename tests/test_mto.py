"""Masked token optimisation: exposed attention matches timm, recalibration isolates visible tokens, loss vs naive."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block

from pretrainlab.backbones import create_backbone
from pretrainlab.backbones.attention import block_with_probabilities
from pretrainlab.backbones.vit_parts import patchify
from pretrainlab.config import build_config
from pretrainlab.data.masks import random_patch_mask
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.methods.parts.mto import mask_to_mask_attention, run_blocks_with_mto, token_role_bias


def tiny_mae(**options: object):  # noqa: ANN201
    config = build_config(METHODS.get("mae").config_class, {**METHODS.get("mae").example_options, **options})
    context = MethodContext(img_size=32, in_chans=1, mean=(0.5,), std=(0.25,))
    return METHODS.get("mae")(create_backbone("vit_nano_patch4", 32, 1), config, context).eval()


def test_block_with_probabilities_matches_timm_block() -> None:
    block = Block(32, 4, qkv_bias=True).eval()
    x = torch.randn(3, 10, 32)
    out, probabilities = block_with_probabilities(block, x)
    torch.testing.assert_close(out, block(x))
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(3, 4, 10))
    is_mask = torch.rand(3, 10, generator=torch.Generator().manual_seed(0)) < 0.5
    bias = token_role_bias(is_mask)
    out, _ = block_with_probabilities(block, x, bias)
    torch.testing.assert_close(out, block(x, attn_mask=bias))


def test_recalibration_gives_visible_queries_no_attention_on_mask_keys() -> None:
    is_mask = torch.tensor([[False, True, False, True, True]])
    block = Block(16, 2, qkv_bias=True).eval()
    _, probabilities = block_with_probabilities(block, torch.randn(1, 5, 16), token_role_bias(is_mask))
    visible_rows = probabilities[0][:, ~is_mask[0]]  # (H, visible queries, L)
    assert float(visible_rows[..., is_mask[0]].detach().abs().max()) == 0.0
    assert bool((probabilities[0][:, is_mask[0]][..., is_mask[0]] > 0).all()), "mask queries still see everything"


def test_mask_to_mask_attention_matches_a_naive_loop() -> None:
    generator = torch.Generator().manual_seed(1)
    probabilities = torch.rand(2, 3, 6, 6, generator=generator).softmax(-1)
    is_mask = torch.rand(2, 6, generator=generator) < 0.5
    values = [probabilities[b, h, q][is_mask[b]].sum() for b in range(2) for h in range(3) for q in range(6)
              if is_mask[b, q]]
    torch.testing.assert_close(mask_to_mask_attention(probabilities, is_mask), torch.stack(values).mean())


def test_with_recalibration_visible_outputs_ignore_the_mask_token() -> None:
    blocks = [Block(16, 2, qkv_bias=True).eval() for _ in range(2)]
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randn(2, 8, 16, generator=generator)
    is_mask = torch.rand(2, 8, generator=generator) < 0.6
    changed = torch.where(is_mask.unsqueeze(-1), torch.randn(16, generator=generator), tokens)  # another mask token
    with torch.no_grad():
        out, _ = run_blocks_with_mto(blocks, tokens, is_mask)
        out_changed, _ = run_blocks_with_mto(blocks, changed, is_mask)
        plain, _ = run_blocks_with_mto(blocks, tokens, is_mask, exclude_from_visible=False)
        plain_changed, _ = run_blocks_with_mto(blocks, changed, is_mask, exclude_from_visible=False)
    torch.testing.assert_close(out_changed[~is_mask], out[~is_mask])
    assert not torch.allclose(plain_changed[~is_mask], plain[~is_mask])


def test_mae_without_mto_is_unchanged_and_with_mto_adds_the_weighted_loss() -> None:
    images = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    mask = random_patch_mask(4, 64, 0.75, torch.Generator().manual_seed(4))
    plain = tiny_mae()
    visible, visible_index = plain.encode_visible(images, mask)
    with torch.no_grad():
        torch.testing.assert_close(plain.reconstruct(images, mask)[0], plain.decoder(visible, visible_index, 64))

    method = tiny_mae(mto=0.5)
    method.load_state_dict(plain.state_dict())
    batch = method.prepare_batch((images.clamp(-2, 2) * 60 + 128).byte().permute(0, 2, 3, 1), None,
                                 torch.Generator().manual_seed(5))
    state = batch.generator.get_state()
    outputs = method(batch)
    batch.generator.set_state(state)
    view = batch.views["base"][0].images
    mask = random_patch_mask(4, 64, 0.75, batch.generator)
    visible, visible_index = method.encode_visible(view, mask)
    tokens = method.decoder.fill(visible, visible_index, 64)
    masses = []
    for block in method.decoder.blocks:
        tokens, probabilities = block_with_probabilities(block, tokens, token_role_bias(mask))
        masses.append(mask_to_mask_attention(probabilities, mask))
    reconstruction = masked_patch_loss(method.decoder.head(tokens), patchify(view, 4), mask, True)
    torch.testing.assert_close(outputs["mto_loss"], torch.stack(masses).mean())
    torch.testing.assert_close(outputs["loss"], reconstruction + 0.5 * torch.stack(masses).mean())
    assert "mto_loss" not in plain(batch)


def test_mto_loss_has_a_gradient_on_the_attention_weights() -> None:
    blocks = [Block(16, 2, qkv_bias=True) for _ in range(2)]
    is_mask = torch.rand(3, 8, generator=torch.Generator().manual_seed(6)) < 0.6
    _, loss = run_blocks_with_mto(blocks, torch.randn(3, 8, 16), is_mask)
    (gradient,) = torch.autograd.grad(loss, [blocks[0].attn.qkv.weight])
    assert float(gradient.abs().sum()) > 0
