"""Barlow Twins, VICReg and PixPro pass each view through the backbone and heads on its own, as their official code
does: every batch norm computes its statistics over one view's batch, never over both views pooled."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.methods import METHODS, MethodContext

BATCH = 8


def tiny(name: str, **options):
    method_class = METHODS.get(name)
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, name)
    context = MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, dataset_size=64)
    return method_class(create_backbone("tinycnn", 32, 3), config, context).train()


def batch_norm_batch_sizes(method: nn.Module, run) -> list[int]:  # noqa: ANN001
    """Runs `run()` and returns the batch size every batch norm layer of `method` saw."""
    sizes: list[int] = []
    handles = [module.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
               for module in method.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return sizes


@pytest.mark.parametrize(("name", "options"), [("barlowtwins", {}), ("vicreg", {}), ("pixpro", {}),
                                               ("pixpro", {"instance_weight": 1.0})])
def test_every_batch_norm_sees_one_view_at_a_time(name: str, options: dict, rgb_batch: torch.Tensor) -> None:
    method = tiny(name, **options)
    batch = method.prepare_batch(rgb_batch[:BATCH], None, torch.Generator().manual_seed(0))
    sizes = batch_norm_batch_sizes(method, lambda: method(batch)["loss"].backward())
    assert sizes and set(sizes) == {BATCH}, f"{name}: batch norm saw batches of {sorted(set(sizes))}"


@pytest.mark.parametrize("name", ["barlowtwins", "vicreg"])
def test_loss_equals_the_loss_of_separately_encoded_views(name: str, rgb_batch: torch.Tensor) -> None:
    method = tiny(name)
    batch = method.prepare_batch(rgb_batch[:BATCH], None, torch.Generator().manual_seed(0))
    loss = method(batch)["loss"]
    view_a, view_b = (view.images for view in batch.views["global"])
    with torch.no_grad():  # the reference: each view encoded by itself, in training mode (batch statistics)
        z_a = method.projection(method.backbone.pooled(view_a))
        z_b = method.projection(method.backbone.pooled(view_b))
        pooled = method.projection(method.backbone.pooled(torch.cat([view_a, view_b]))).chunk(2)
    criterion = method.criterion
    torch.testing.assert_close(loss.detach(), criterion.combine(criterion.terms(z_a, z_b)))
    assert not torch.allclose(loss.detach(), criterion.combine(criterion.terms(*pooled)))  # the old, pooled way
