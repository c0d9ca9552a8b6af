"""CroCo: proxy crops overlap, hidden pixels never reach the prediction, the second view does, pairs are used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.backbones.vit_parts import patchify
from pretrainlab.config import build_config
from pretrainlab.data import load_source
from pretrainlab.data.pairs import PARTNERS
from pretrainlab.data.views import crop_resize_flip, normalize, to_float
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.methods.croco import related_boxes
from pretrainlab.pipeline import build_run_config, pretrain


def tiny_croco(in_chans: int = 1, **options: object):  # noqa: ANN201
    config = build_config(METHODS.get("croco").config_class, {**METHODS.get("croco").example_options, **options})
    context = MethodContext(img_size=32, in_chans=in_chans, mean=(0.5,) * in_chans, std=(0.25,) * in_chans)
    return METHODS.get("croco")(create_backbone("vit_nano_patch4", 32, in_chans), config, context).eval()


def test_related_boxes_overlap_and_stay_inside() -> None:
    generator = torch.Generator().manual_seed(0)
    low = torch.rand(500, 2, generator=generator) * 0.5
    first = torch.cat([low, low + 0.2 + torch.rand(500, 2, generator=generator) * 0.3], dim=1)  # (x0, y0, x1, y1)
    second = related_boxes(first, 0.25, (0.75, 1.33), generator)
    assert bool((second >= -1e-6).all() and (second <= 1 + 1e-6).all())
    overlap_w = torch.minimum(first[:, 2], second[:, 2]) - torch.maximum(first[:, 0], second[:, 0])
    overlap_h = torch.minimum(first[:, 3], second[:, 3]) - torch.maximum(first[:, 1], second[:, 1])
    assert bool((overlap_w > 0).all() and (overlap_h > 0).all()), "proxy crops must overlap the first crop"
    ratio = (second[:, 2] - second[:, 0]) / (first[:, 2] - first[:, 0])
    assert bool((ratio > 0.74).all() and (ratio < 1.34).all())


def test_hidden_pixels_never_reach_the_prediction_but_the_second_view_does() -> None:
    method = tiny_croco()
    generator = torch.Generator().manual_seed(1)
    first, second = torch.randn(2, 1, 32, 32, generator=generator), torch.randn(2, 1, 32, 32, generator=generator)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[:, torch.randperm(64, generator=generator)[:58]] = True  # 90 % hidden
    with torch.no_grad():
        reference = method.complete(first, second, mask)
        hidden_pixels = mask.view(2, 8, 8).repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)
        perturbed = torch.where(hidden_pixels, first + 5 * torch.randn_like(first), first)
        assert torch.equal(patchify(perturbed, 4)[~mask], patchify(first, 4)[~mask])
        torch.testing.assert_close(method.complete(perturbed, second, mask), reference)
        changed = method.complete(first, second + torch.randn_like(second), mask)
    assert not torch.allclose(changed[mask], reference[mask]), "the decoder must read the second view"


def naive_masked_patch_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    errors = []
    for b in range(prediction.shape[0]):
        for n in range(prediction.shape[1]):
            if mask[b, n]:
                patch = target[b, n]
                normalised = (patch - patch.mean()) / torch.sqrt(patch.var() + 1e-6)
                errors.append(((prediction[b, n] - normalised) ** 2).mean())
    return torch.stack(errors).mean()


def test_forward_loss_is_normalised_pixel_error_on_hidden_patches(rgb_batch: torch.Tensor) -> None:
    method = tiny_croco(in_chans=3)
    batch = method.prepare_batch(rgb_batch[:4], None, torch.Generator().manual_seed(2))
    state = batch.generator.get_state()
    loss = method(batch)["loss"]
    batch.generator.set_state(state)  # replay the same second view and mask
    first = batch.views["first"][0].images
    second = method.second_view(batch)
    mask = torch.rand(4, 64, generator=batch.generator).argsort(1).argsort(1) < round(0.9 * 64)
    assert int(mask.sum(1)[0]) == 58
    expected = naive_masked_patch_loss(method.complete(first, second, mask), patchify(first, 4), mask)
    torch.testing.assert_close(loss, expected)


def test_pairs_give_the_partner_under_the_same_crop(rgb_batch: torch.Tensor) -> None:
    method = tiny_croco(in_chans=3)
    images, partners = rgb_batch[:4], rgb_batch[4:8]
    batch = method.prepare_batch(images, None, torch.Generator().manual_seed(3))
    proxy = method.second_view(batch)
    batch.extra[PARTNERS] = partners
    second = method.second_view(batch)
    first = batch.views["first"][0]
    expected = normalize(crop_resize_flip(to_float(partners), first.boxes, first.flipped, 32), method.mean, method.std)
    torch.testing.assert_close(second, expected)
    assert not torch.allclose(second, proxy)


def test_pretrain_on_a_pair_source_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (32, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "pairs.npz", x1=first, x2=np.roll(first, 2, axis=2))
    source = load_source(f"pairs:{tmp_path / 'pairs.npz'}")
    config = build_run_config("croco", {"backbone": "vit_nano_patch4", "out": str(tmp_path / "run")},
                              {"epochs": 1, "batch_size": 16, "device": "cpu", "warmup_epochs": 0},
                              {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2})
    summary = pretrain(config, source=source, show_progress=False)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    assert (tmp_path / "run" / "backbone.safetensors").exists()


def test_reconstruction_grid_pastes_visible_patches_back(rgb_batch: torch.Tensor) -> None:
    method = tiny_croco(in_chans=3)
    images = (rgb_batch[:3].permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    grid = method.reconstruction_grid(images, torch.Generator().manual_seed(8))
    assert grid.shape == (9, 3, 32, 32)
    shown = (images * 0.25 + 0.5).clamp(0, 1)
    torch.testing.assert_close(grid[:3], shown)
    kept = (grid[6:] - shown).abs().amax(dim=1) < 1e-5  # (3, 32, 32): pixels equal to the input
    assert 0.05 < float(kept.float().mean()) < 0.3, "about 10 % of the patches are visible and pasted back"
