"""Registry-driven: every registered method trains on a tiny backbone at 32 px, from 32 px colour images and from
28 px grey ones (a size other than the training size, as `--img-size 32` on `builtin`), where it also draws its
end-of-run reconstruction grid from the stored images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.data.captions import CAPTION_COUNTS, CAPTIONS, encode_captions
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.methods.parts.reconstruction import save_reconstruction_grid

GRID_IMAGES = 4

# Image-text methods get two captions per image (drawn from a small vocabulary) with every batch.
EXAMPLE_CAPTIONS = [[f"a {i % 10} above a {(i * 3) % 10}", f"{i % 4} objects"] for i in range(16)]


def tiny_method(name: str, in_chans: int = 3, num_classes: int = 10):
    method_class = METHODS.get(name)
    backbone_name = "vit_nano_patch4" if method_class.needs_tokens else "tinycnn"
    backbone = create_backbone(backbone_name, 32, in_chans)
    config = build_config(method_class.config_class, dict(method_class.example_options), name)
    context = MethodContext(img_size=32, in_chans=in_chans, mean=(0.5,) * in_chans, std=(0.25,) * in_chans,
                            num_classes=num_classes, dataset_size=64,
                            captions=tuple(c for pair in EXAMPLE_CAPTIONS for c in pair))
    return method_class(backbone, config, context)


@pytest.mark.parametrize("name", [*METHODS.names(), "compose:mae+simclr"])
@pytest.mark.parametrize("in_chans", [3, 1])
def test_method_gives_finite_loss_and_backbone_gradient(name: str, in_chans: int, rgb_batch: torch.Tensor,
                                                        tmp_path: Path) -> None:
    method = tiny_method(name, in_chans)
    method.train()
    # Grey images are stored at 28 px: whatever the method masks or reconstructs must be made at 32.
    images = rgb_batch[..., :in_chans] if in_chans == 3 else rgb_batch[:, 2:30, 2:30, :1].contiguous()
    labels = torch.arange(len(images)) % 10
    generator = torch.Generator().manual_seed(0)
    for step in range(2):  # a second step exercises queues, momentum and EMA state after an update
        batch = method.prepare_batch(images, labels, generator)
        if method.needs_captions:
            captions, counts = encode_captions(EXAMPLE_CAPTIONS)
            batch.extra.update({CAPTIONS: torch.from_numpy(captions), CAPTION_COUNTS: torch.from_numpy(counts)})
        outputs = method(batch)
        loss = outputs["loss"]
        assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss {loss}"
        method.zero_grad()
        loss.backward()
        gradients = [p.grad for p in method.backbone.parameters() if p.grad is not None]
        assert gradients, f"{name}: no gradient reaches the backbone"
        assert any(float(g.abs().sum()) > 0 for g in gradients), f"{name}: backbone gradients are all zero"
        with torch.no_grad():
            for parameter in method.parameters():
                if parameter.grad is not None:
                    parameter -= 0.01 * parameter.grad
        method.on_step_end(step, 10)
    if in_chans == 1:  # the pipeline's end-of-run grid, drawn from the stored (28 px) images
        path = tmp_path / "reconstructions.png"
        if save_reconstruction_grid(method, images.numpy(), path, torch.device("cpu"), count=GRID_IMAGES):
            assert Image.open(path).size == (GRID_IMAGES * 33 + 1, 3 * 33 + 1)  # 32 px images, 1 px padding


@pytest.mark.parametrize("name", METHODS.names())
def test_method_has_paper_reference_and_recipe(name: str) -> None:
    from importlib import resources

    method_class = METHODS.get(name)
    module_doc = __import__(method_class.__module__, fromlist=["_"]).__doc__ or ""
    assert "arXiv" in module_doc, f"{name}: the module docstring must cite the paper (title and arXiv id)"
    recipe = resources.files("pretrainlab") / "recipes" / f"{name}.yaml"
    assert recipe.is_file(), f"{name}: missing recipe recipes/{name}.yaml"
