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
from pretrainlab.data.tokens.adapt import TokenAdapter
from pretrainlab.data.tokens.token_file import BYTE, Tokenizer, codes_as_images, tokenizer_id
from pretrainlab.data.tokens.vq import VQVAE, VQConfig
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.methods.parts.reconstruction import save_reconstruction_grid

GRID_IMAGES = 4

# Image-text methods get two captions per image (drawn from a small vocabulary) with every batch.
EXAMPLE_CAPTIONS = [[f"a {i % 10} above a {(i * 3) % 10}", f"{i % 4} objects"] for i in range(16)]


CODE_GRID = 8  # methods on code grids train on 8x8 grids of a random tokenizer (data/tokens)


def tiny_tokenizer(in_chans: int) -> Tokenizer:
    """A random tokenizer: 200 codes (stored in one byte, in_chans 1) or 300 (two bytes, in_chans 3)."""
    size = 200 if in_chans == 1 else 300
    vq = VQVAE(VQConfig(codebook_size=size, code_dim=4, hidden=8, downsample=2, in_chans=1)).eval()
    meta = {"codebook_size": size, "grid": [CODE_GRID, CODE_GRID], "tokenizer_id": tokenizer_id(vq.codebook)}
    return Tokenizer(vq, TokenAdapter(4, size, width=8).eval(), meta)


def code_grid_batch(in_chans: int) -> torch.Tensor:
    """(16, 8, 8, in_chans) uint8 code bytes of random codes, as the `tokens:` source hands them over."""
    size = 200 if in_chans == 1 else 300
    codes = torch.randint(0, size, (16, CODE_GRID, CODE_GRID), generator=torch.Generator().manual_seed(2))
    return torch.from_numpy(codes_as_images(codes.numpy(), size))


def tiny_method(name: str, in_chans: int = 3, num_classes: int = 10):
    method_class = METHODS.get(name)
    config = build_config(method_class.config_class, dict(method_class.example_options), name)
    if method_class.takes_code_grids:  # a token backbone on code grids (pixels would be refused)
        tokenizer = tiny_tokenizer(in_chans)
        backbone = create_backbone("test_vit_token", CODE_GRID, in_chans, codebook_size=tokenizer.codebook_size)
        context = MethodContext(img_size=CODE_GRID, in_chans=in_chans, mean=(0.0,) * in_chans,
                                std=(BYTE,) * in_chans, num_classes=num_classes, dataset_size=64, tokenizer=tokenizer)
        return method_class(backbone, config, context)
    backbone_name = "vit_nano_patch4" if method_class.needs_tokens else "tinycnn"
    backbone = create_backbone(backbone_name, 32, in_chans)
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
    if method.takes_code_grids:
        images = code_grid_batch(in_chans)
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
