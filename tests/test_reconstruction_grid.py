"""Reconstruction grids: the three rows are right, and a short pre-training writes reconstructions.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretrainlab.backbones.vit_parts import patchify
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.losses.reconstruction import normalize_patches
from pretrainlab.methods import METHODS
from pretrainlab.methods.parts.reconstruction import MASKED_GREY, patch_reconstruction_grid
from pretrainlab.pipeline import build_run_config, pretrain

MEAN, STD = torch.tensor([0.4]), torch.tensor([0.2])


def test_grid_rows_are_input_masked_input_and_reconstruction() -> None:
    images = (torch.rand(2, 1, 8, 8) - 0.4) / 0.2  # normalised, display values in [0, 1]
    mask = torch.tensor([[True, False, False, True], [False, True, False, False]])
    target = patchify(images, 4)
    wrong = torch.zeros_like(target)
    grid = patch_reconstruction_grid(images, wrong, mask, 4, MEAN, STD, normalized_prediction=False)
    shown, masked, reconstruction = grid.chunk(3)
    assert grid.shape == (6, 1, 8, 8)
    assert torch.allclose(shown, images * 0.2 + 0.4, atol=1e-6)
    hidden = patchify(masked, 4)[mask]
    assert torch.all(hidden == MASKED_GREY)
    assert torch.allclose(patchify(masked, 4)[~mask], patchify(shown, 4)[~mask])
    assert torch.allclose(patchify(reconstruction, 4)[~mask], patchify(shown, 4)[~mask])  # visible pasted back
    assert torch.allclose(patchify(reconstruction, 4)[mask], torch.full_like(hidden, 0.4))  # zero = the mean
    # a perfect prediction, in pixels or per-patch normalised, reproduces the input
    for prediction, normalized in ((target, False), (normalize_patches(target), True)):
        perfect = patch_reconstruction_grid(images, prediction, mask, 4, MEAN, STD, normalized_prediction=normalized)
        assert torch.allclose(perfect.chunk(3)[2], shown, atol=1e-3)


def tiny_source() -> ImageSource:
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (32, 32, 32, 1), dtype=np.uint8)
    return ImageSource("synthetic", ImageSet(images, np.arange(32) % 4))


@pytest.mark.parametrize(("method", "backbone"), [("spark", "tinycnn"), ("mae", "vit_nano_patch4"),
                                                  ("simmim", "vit_nano_patch4"), ("cae", "vit_nano_patch4"),
                                                  ("mp3", "vit_nano_patch4")])
def test_two_step_pretraining_saves_a_grid(tmp_path: Path, method: str, backbone: str) -> None:
    out = tmp_path / method
    config = build_run_config(method, {"backbone": backbone, "out": str(out)},
                              {"epochs": 1, "batch_size": 16, "warmup_epochs": 0, "device": "cpu"},
                              dict(METHODS.get(method).example_options))
    summary = pretrain(config, show_progress=False, source=tiny_source())
    assert summary["steps"] == 2
    grid_file = out / "reconstructions.png"
    if method == "mp3":  # predicts positions, reconstructs nothing
        assert not grid_file.exists()
        return
    with Image.open(grid_file) as image:
        width, height = image.size
    assert (width, height) == (8 * 33 + 1, 3 * 33 + 1)  # 8 columns, 3 rows of 32 px with 1 px padding
