"""SimMIM and CAE: mask-token insertion, what hidden patches may and may not influence, losses vs naive references."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.backbones.vit_parts import encode_tokens, patchify, unpatchify
from pretrainlab.config import build_config
from pretrainlab.data.masks import coarse_patch_mask
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods import METHODS, MethodContext


def make(name: str, in_chans: int = 3, **options):
    method_class = METHODS.get(name)
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, name)
    context = MethodContext(img_size=32, in_chans=in_chans, mean=(0.5,) * in_chans, std=(0.25,) * in_chans)
    return method_class(create_backbone("vit_nano_patch4", 32, in_chans), config, context)


def hide(images: torch.Tensor, mask: torch.Tensor, patch: int) -> torch.Tensor:
    """images with fresh noise in the hidden patches only."""
    patches = patchify(images, patch)
    noisy = torch.where(mask.unsqueeze(-1), patches + 4 * torch.randn_like(patches), patches)
    return unpatchify(noisy, patch, images.shape[1], (images.shape[2] // patch, images.shape[3] // patch))


def naive_masked_loss(prediction, target, mask, normalize: bool, absolute: bool) -> torch.Tensor:
    total, count = 0.0, 0
    for b in range(prediction.shape[0]):
        for n in range(prediction.shape[1]):
            if not mask[b, n]:
                continue
            t = target[b, n]
            if normalize:
                t = (t - t.mean()) / torch.sqrt(t.var() + 1e-6)
            error = (prediction[b, n] - t).abs() if absolute else (prediction[b, n] - t) ** 2
            total, count = total + error.mean(), count + 1
    return total / count


@pytest.mark.parametrize(("normalize", "distance"), [(True, "squared"), (False, "absolute"), (True, "absolute")])
def test_masked_patch_loss_matches_naive_reference(normalize: bool, distance: str) -> None:
    prediction, target = torch.randn(3, 10, 12), torch.randn(3, 10, 12)
    mask = torch.rand(3, 10) > 0.5
    expected = naive_masked_loss(prediction, target, mask, normalize, distance == "absolute")
    assert torch.allclose(masked_patch_loss(prediction, target, mask, normalize, distance), expected, atol=1e-5)
    with pytest.raises(PretrainlabError, match="distance"):
        masked_patch_loss(prediction, target, mask, normalize, "cosine")


def test_coarse_mask_hides_whole_blocks() -> None:
    mask = coarse_patch_mask(64, (8, 8), 2, 0.6, torch.Generator().manual_seed(0)).view(64, 8, 8)
    blocks = mask.view(64, 4, 2, 4, 2)
    assert torch.equal(blocks.amin(dim=(2, 4)), blocks.amax(dim=(2, 4)))  # each 2x2 block all hidden or all shown
    assert abs(mask.float().mean().item() - 10 / 16) < 1e-6  # ceil(0.6 * 16) = 10 blocks of 16
    odd = coarse_patch_mask(4, (7, 7), 2, 0.5)  # 2 does not divide 7: a cropped 4x4 block grid
    assert odd.shape == (4, 49)


@pytest.mark.parametrize(("cells", "ratio"), [(4, 0.6), (16, 0.6), (9, 0.5), (10, 0.7), (49, 0.75), (4, 0.5)])
def test_coarse_mask_hides_the_ceiling_of_the_cells_as_simmims_mask_generator(cells: int, ratio: float) -> None:
    """SimMIM's MaskGenerator: mask_count = int(np.ceil(token_count * mask_ratio)), 1e-9 of float error aside."""
    side = int(cells**0.5)
    if side * side != cells:  # a 2 x 5 cell grid for 10
        rows, cols = 2, cells // 2
    else:
        rows, cols = side, side
    expected = -(-round(ratio * 1000) * cells // 1000)  # exact integer ceiling of ratio * cells
    mask = coarse_patch_mask(8, (2 * rows, 2 * cols), 2, ratio, torch.Generator().manual_seed(1))
    hidden_cells = mask.view(8, rows, 2, cols, 2)[:, :, 0, :, 0].sum(dim=(1, 2))
    assert hidden_cells.tolist() == [expected] * 8


def test_simmim_inserts_mask_tokens_before_positions() -> None:
    method = make("simmim").train()
    vit = method.backbone.model
    images = torch.randn(2, 3, 32, 32)
    mask = method.draw_mask(2, torch.Generator().manual_seed(0), "cpu")
    seen = {}
    handle = vit.blocks[0].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    try:
        method.reconstruct(images, mask)
    finally:
        handle.remove()
    tokens = seen["x"][:, method.backbone.num_prefix_tokens :]  # (B, N, D) entering the first block
    embedded = vit.patch_embed(images)
    positions = vit.pos_embed[0, vit.num_prefix_tokens :]
    for b in range(2):
        for n in range(mask.shape[1]):
            content = method.mask_token if mask[b, n] else embedded[b, n]
            assert torch.allclose(tokens[b, n], content + positions[n], atol=1e-6)


def test_simmim_hidden_pixels_reach_nothing_and_loss_is_l1_on_hidden() -> None:
    method = make("simmim", in_chans=1).eval()
    images = torch.randn(2, 1, 32, 32)
    mask = method.draw_mask(2, torch.Generator().manual_seed(1), "cpu")
    prediction = method.reconstruct(images, mask)
    assert torch.allclose(prediction, method.reconstruct(hide(images, mask, 4), mask), atol=1e-6)
    expected = naive_masked_loss(prediction, patchify(images, 4), mask, normalize=False, absolute=True)
    loss = masked_patch_loss(prediction, patchify(images, 4), mask, False, "absolute")
    assert torch.allclose(loss, expected, atol=1e-6)


def test_cae_target_is_the_encoder_on_hidden_patches_without_gradient() -> None:
    method = make("cae").train()
    vit = method.backbone.model
    images = torch.randn(2, 3, 32, 32)
    mask = method.draw_mask(2, torch.Generator().manual_seed(2), "cpu")
    out = method.predict_hidden(images, mask)
    assert not out["target"].requires_grad and out["predicted"].requires_grad
    tokens = vit.patch_embed(images) + vit.pos_embed[:, vit.num_prefix_tokens :]
    for b in range(2):
        hidden = tokens[b, mask[b]].unsqueeze(0)  # (1, M, D), in grid order like keep_indices
        expected = encode_tokens(vit, hidden)[:, method.backbone.num_prefix_tokens :]
        expected = (expected - expected.mean(-1, keepdim=True)) / torch.sqrt(expected.var(-1, unbiased=False,
                                                                                        keepdim=True) + 1e-5)
        assert torch.allclose(out["target"][b : b + 1], expected, atol=1e-5)


def test_cae_predictions_use_only_visible_content() -> None:
    method = make("cae").eval()
    images = torch.randn(2, 3, 32, 32)
    mask = method.draw_mask(2, torch.Generator().manual_seed(3), "cpu")
    clean = method.predict_hidden(images, mask)
    perturbed = method.predict_hidden(hide(images, mask, 4), mask)
    assert torch.allclose(clean["predicted"], perturbed["predicted"], atol=1e-5)
    assert torch.allclose(clean["pixels"], perturbed["pixels"], atol=1e-5)
    assert not torch.allclose(clean["target"], perturbed["target"], atol=1e-3)  # the target does see them


def test_cae_loss_is_reconstruction_plus_weighted_alignment() -> None:
    method = make("cae", alignment_weight=2.0).train()
    images = torch.randn(4, 3, 32, 32)
    mask = method.draw_mask(4, torch.Generator().manual_seed(4), "cpu")
    torch.manual_seed(0)
    outputs = method.losses(images, mask)
    out = method.predict_hidden(images, mask)  # deterministic: no dropout in the tiny ViT
    hidden = torch.stack([patchify(images, 4)[b, mask[b]] for b in range(4)])  # (B, M, P), grid order
    every = torch.ones(hidden.shape[:2], dtype=torch.bool)
    reconstruction = naive_masked_loss(out["pixels"], hidden, every, normalize=True, absolute=False)
    alignment = ((out["predicted"] - out["target"]) ** 2).mean()
    assert torch.allclose(outputs["reconstruction_loss"], reconstruction, atol=1e-5)
    assert torch.allclose(outputs["alignment_loss"], alignment, atol=1e-6)
    assert torch.allclose(outputs["loss"], reconstruction + 2.0 * alignment, atol=1e-5)
    outputs["loss"].backward()
    assert float(method.mask_query.grad.abs().sum()) > 0
    assert float(method.backbone.model.patch_embed.proj.weight.grad.abs().sum()) > 0
