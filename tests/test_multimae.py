"""MultiMAE: pseudo-modalities, Dirichlet allocation of visible tokens, masking, losses against naive references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.data.modality_masks import dirichlet_visible_counts, modality_masks
from pretrainlab.data.pseudo_modalities import assign_segments, fit_kmeans, sobel_edges
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods import METHODS, MethodContext


def tiny_multimae(in_chans: int = 3, **options: object):  # noqa: ANN201
    method_class = METHODS.get("multimae")
    config = build_config(method_class.config_class, {**method_class.example_options, **options})
    context = MethodContext(img_size=32, in_chans=in_chans, mean=(0.5,) * in_chans, std=(0.25,) * in_chans)
    return method_class(create_backbone("vit_nano_patch4", 32, in_chans), config, context).eval()


def test_sobel_edges_match_a_naive_loop() -> None:
    images = torch.rand(2, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    gray = 0.2989 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    padded = F.pad(gray.unsqueeze(1), (1, 1, 1, 1), mode="replicate")[:, 0]
    expected = torch.zeros(2, 1, 6, 7)
    kernel = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    for b in range(2):
        for y in range(6):
            for x in range(7):
                gx = sum(kernel[i][j] * padded[b, y + i, x + j] for i in range(3) for j in range(3))
                gy = sum(kernel[j][i] * padded[b, y + i, x + j] for i in range(3) for j in range(3))
                expected[b, 0, y, x] = (gx**2 + gy**2 + 1e-12) ** 0.5
    torch.testing.assert_close(sobel_edges(images), expected)


def test_kmeans_recovers_colour_blobs_and_orders_them_dark_to_bright() -> None:
    generator = torch.Generator().manual_seed(1)
    colours = torch.tensor([[0.9, 0.9, 0.1], [0.1, 0.1, 0.2], [0.2, 0.8, 0.9]])  # bright, dark, middle
    truth = torch.randint(0, 3, (4, 8, 8), generator=generator)
    images = colours[truth].permute(0, 3, 1, 2) + 0.02 * torch.randn(4, 3, 8, 8, generator=generator)
    centroids = fit_kmeans(images, 3)
    torch.testing.assert_close(centroids, colours[[1, 2, 0]], atol=0.02, rtol=0)
    labels = assign_segments(images, centroids)
    assert torch.equal(labels, torch.tensor([2, 0, 1])[truth])
    naive = torch.stack([((images.permute(0, 2, 3, 1) - c) ** 2).sum(-1) for c in centroids], -1).argmin(-1)
    assert torch.equal(labels, naive)


def test_dirichlet_counts_sum_exactly_and_follow_alpha() -> None:
    generator = torch.Generator().manual_seed(2)
    counts = dirichlet_visible_counts(4000, 3, 25, 1.0, generator, max_per_modality=64)
    assert bool((counts.sum(1) == 25).all()) and bool((counts >= 0).all())
    torch.testing.assert_close(counts.float().mean(0), torch.full((3,), 25 / 3), atol=0.4, rtol=0)
    concentrated = dirichlet_visible_counts(4000, 3, 25, 0.05, generator)
    assert float((concentrated.max(1).values >= 24).float().mean()) > 0.7  # mostly one modality per image
    assert float((counts.max(1).values >= 24).float().mean()) < 0.2
    with pytest.raises(PretrainlabError, match="do not fit"):
        dirichlet_visible_counts(2, 3, 70, 1.0, generator, max_per_modality=64)


def test_modality_masks_hide_all_but_the_counted_patches() -> None:
    counts = torch.tensor([[0, 5, 20], [25, 0, 0]])
    hidden = modality_masks(counts, 64, torch.Generator().manual_seed(3))
    assert hidden.shape == (2, 3, 64)
    assert torch.equal((~hidden).sum(-1), counts)


def test_hidden_tokens_never_reach_the_encoder_output() -> None:
    method = tiny_multimae()
    generator = torch.Generator().manual_seed(4)
    tokens = torch.randn(2, 4 * 64, method.backbone.embed_dim, generator=generator)
    counts = dirichlet_visible_counts(2, 4, method.num_visible, 1.0, generator)
    hidden = modality_masks(counts, 64, generator)  # (B, M, N)
    with torch.no_grad():
        encoded, grids = method.encode(tokens, hidden)
        perturbed = torch.where(hidden.flatten(1).unsqueeze(-1), tokens + 3.0, tokens)
        encoded_perturbed, grids_perturbed = method.encode(perturbed, hidden)
    torch.testing.assert_close(encoded_perturbed, encoded)
    assert encoded.shape[1] == method.backbone.num_prefix_tokens + method.num_visible
    for index, grid in enumerate(grids):
        assert bool((grid[hidden[:, index]] == 0).all())
        torch.testing.assert_close(grids_perturbed[index], grid)


def test_segment_loss_is_pixel_cross_entropy_on_hidden_patches() -> None:
    method = tiny_multimae()
    generator = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 4, (2, 32, 32), generator=generator)
    prediction = torch.randn(2, 64, 16 * 4, generator=generator)
    hidden = torch.rand(2, 64, generator=generator) < 0.6
    losses = []
    for b in range(2):
        for n in range(64):
            if hidden[b, n]:
                row, col = divmod(n, 8)
                patch = labels[b, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4].reshape(-1)  # (16,) row-major
                logits = prediction[b, n].view(16, 4)
                losses.append(F.cross_entropy(logits, patch))
    torch.testing.assert_close(method.modality_loss("segments", prediction, labels, hidden), torch.stack(losses).mean())


def test_modalities_and_errors() -> None:
    assert tiny_multimae(in_chans=1).modalities == ["image", "edges", "segments"]
    assert tiny_multimae(in_chans=3).modalities == ["image", "gray", "edges", "segments"]
    with pytest.raises(PretrainlabError, match="including 'image'"):
        tiny_multimae(modalities=("edges", "segments"))
    with pytest.raises(PretrainlabError, match="distinct names"):
        tiny_multimae(modalities=("image", "depth"))


def test_forward_logs_each_modality_and_fits_segments_once(rgb_batch: torch.Tensor) -> None:
    method = tiny_multimae().train()
    generator = torch.Generator().manual_seed(6)
    outputs = method(method.prepare_batch(rgb_batch, None, generator))
    assert set(outputs) == {"loss", "reconstruction_loss", "loss_image", "loss_gray", "loss_edges", "loss_segments"}
    torch.testing.assert_close(outputs["loss"], sum(outputs[f"loss_{m}"] for m in method.modalities))
    centroids = method.segment_centroids.clone()
    method(method.prepare_batch(rgb_batch.flip(0) // 2, None, generator))
    assert bool(method.segments_fitted) and torch.equal(method.segment_centroids, centroids)


def test_reconstruction_grid_shows_input_masked_input_and_reconstruction(rgb_batch: torch.Tensor) -> None:
    method = tiny_multimae()
    images = (rgb_batch[:3].permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    method.segment_labels(images * 0.25 + 0.5)  # fitted as after training
    grid = method.reconstruction_grid(images, torch.Generator().manual_seed(7))
    assert grid.shape == (9, 3, 32, 32) and float(grid.min()) >= 0 and float(grid.max()) <= 1
    torch.testing.assert_close(grid[:3], (images * 0.25 + 0.5).clamp(0, 1))
