"""Registry-driven: every registered method trains one step on a tiny backbone at 32 px."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.data.captions import CAPTION_COUNTS, CAPTIONS, encode_captions
from pretrainlab.methods import METHODS, MethodContext

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


@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize("in_chans", [3, 1])
def test_method_gives_finite_loss_and_backbone_gradient(name: str, in_chans: int, rgb_batch: torch.Tensor) -> None:
    method = tiny_method(name, in_chans)
    method.train()
    images = rgb_batch[..., :in_chans]
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


@pytest.mark.parametrize("name", METHODS.names())
def test_method_has_paper_reference_and_recipe(name: str) -> None:
    from importlib import resources

    method_class = METHODS.get(name)
    module_doc = __import__(method_class.__module__, fromlist=["_"]).__doc__ or ""
    assert "arXiv" in module_doc, f"{name}: the module docstring must cite the paper (title and arXiv id)"
    recipe = resources.files("pretrainlab") / "recipes" / f"{name}.yaml"
    assert recipe.is_file(), f"{name}: missing recipe recipes/{name}.yaml"
