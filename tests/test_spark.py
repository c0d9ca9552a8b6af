"""SparK: sparse-convolution emulation on timm CNNs (nothing leaks from masked positions), masked BatchNorm,
clean restoration of the model, and the method end to end on ResNets, ConvNeXt and tinycnn."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from pretrainlab.backbones import create_backbone
from pretrainlab.backbones.sparse_conv import (
    MaskPyramid,
    check_sparse_support,
    masked_batch_norm,
    sparse_convolution,
)
from pretrainlab.config import build_config
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods import METHODS, MethodContext

# (timm name, image size): the CIFAR ResNet, timm's own ResNet and ConvNeXt (stride 32), the tiny CNN
BACKBONES = [("tinycnn", 32), ("resnet18_cifar", 16), ("resnet18", 32), ("test_convnext", 32)]


def make_spark(name: str, img_size: int, in_chans: int = 3, **options):
    backbone = create_backbone(name, img_size, in_chans)
    method_class = METHODS.get("spark")
    config = build_config(method_class.config_class, {"decoder_width": 16, **options}, "spark")
    context = MethodContext(img_size=img_size, in_chans=in_chans, mean=(0.5,) * in_chans, std=(0.25,) * in_chans)
    return method_class(backbone, config, context)


def hidden_pixels(method, mask: torch.Tensor, img_size: int) -> torch.Tensor:
    """(B, 1, S, S) float, 1 where the pixel belongs to a hidden patch."""
    visible = (~mask).view(mask.shape[0], *method.grid)
    return 1.0 - MaskPyramid(visible).at((img_size, img_size))


@pytest.mark.parametrize(("name", "img_size"), BACKBONES)
def test_masked_pixels_do_not_reach_visible_outputs(name: str, img_size: int) -> None:
    method = make_spark(name, img_size).train()
    images = torch.randn(4, 3, img_size, img_size)
    mask = method.draw_mask(4, torch.Generator().manual_seed(0), "cpu")
    perturbed = images + 5.0 * torch.randn_like(images) * hidden_pixels(method, mask, img_size)
    assert not torch.equal(images, perturbed)
    features, visibility = method.encode(images, mask)
    features_perturbed, _ = method.encode(perturbed, mask)
    for feature, other, seen in zip(features, features_perturbed, visibility, strict=True):
        assert seen.sum() > 0
        assert torch.equal(feature * seen, other * seen), f"{name}: masked pixels changed a visible output"
        assert float((feature.detach() * (1 - seen)).abs().max()) == 0.0, f"{name}: masked positions are not empty"


def _inject_noise_at_masked(model: nn.Module, pyramid: MaskPyramid, kinds: tuple[type, ...]) -> list:
    """Hooks that write noise into masked positions after per-position layers (what a sparse CNN never sees)."""

    def hook(_module, _args, output):
        return output + 3.0 * torch.randn_like(output) * (1 - pyramid.at(output.shape[-2:]))

    return [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize(("name", "img_size", "kinds"), [("tinycnn", 32, (nn.ReLU,)),
                                                         ("test_convnext", 32, (LayerNorm2d,))])
def test_every_convolution_reads_only_visible_positions(name: str, img_size: int, kinds: tuple) -> None:
    """Garbage written at masked positions between layers changes nothing visible, and would without sparsity."""
    method = make_spark(name, img_size).train()
    model = method.backbone.model
    images = torch.randn(4, 3, img_size, img_size)
    mask = method.draw_mask(4, torch.Generator().manual_seed(1), "cpu")
    clean, visibility = method.encode(images, mask)
    visible = (~mask).view(4, *method.grid)
    handles = _inject_noise_at_masked(model, MaskPyramid(visible), kinds)
    try:
        noisy, _ = method.encode(images, mask)
        zero_filled = images * (1 - hidden_pixels(method, mask, img_size))
        dense_noisy = model.forward_intermediates(zero_filled, intermediates_only=True)[-1]
    finally:
        for handle in handles:
            handle.remove()
    for a, b, seen in zip(clean, noisy, visibility, strict=True):
        assert torch.allclose(a * seen, b * seen, atol=1e-6)
    # the control: a dense forward lets the injected values spread into visible outputs
    dense_clean = model.forward_intermediates(zero_filled, intermediates_only=True)[-1]
    seen = visibility[-1]
    assert not torch.allclose(dense_clean * seen, dense_noisy * seen, atol=1e-3)


def test_masked_batch_norm_matches_batch_norm_on_visible_positions() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 6) * 2 + 1
    visible = (torch.rand(3, 1, 6, 6) > 0.4).float()
    norm = nn.BatchNorm2d(5, momentum=0.3)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    reference = nn.BatchNorm1d(5, momentum=0.3)
    reference.load_state_dict(norm.state_dict())
    out = masked_batch_norm(x, visible, norm.train())
    selected = visible.squeeze(1).bool()  # (B, H, W)
    expected = reference.train()(x.permute(0, 2, 3, 1)[selected])  # (M, C): BatchNorm over visible positions only
    assert torch.allclose(out.permute(0, 2, 3, 1)[selected], expected, atol=1e-5)
    assert float(out.detach().permute(0, 2, 3, 1)[~selected].abs().max()) == 0.0
    assert torch.allclose(norm.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(norm.running_var, reference.running_var, atol=1e-5)
    assert int(norm.num_batches_tracked) == 1
    evaluated = masked_batch_norm(x, visible, norm.eval())
    expected_eval = F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
    assert torch.allclose(evaluated, expected_eval * visible, atol=1e-5)


def _hook_counts(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_model_is_restored_after_the_sparse_forward_even_on_error() -> None:
    method = make_spark("resnet18", 32).train()
    model = method.backbone.model
    modules_before = dict(model.named_modules())
    keys_before = list(model.state_dict())
    visible = torch.ones(2, *method.grid, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="boom"), sparse_convolution(model, visible):
        assert _hook_counts(model) > 0
        assert type(model.bn1).__name__ == "MaskedBatchNorm2d"
        raise RuntimeError("boom")
    method(_batch(method, 32))
    assert _hook_counts(model) == 0
    assert dict(model.named_modules()) == modules_before  # the same module objects, no wrappers left
    assert list(model.state_dict()) == keys_before


def _batch(method, img_size: int, in_chans: int = 3):
    images = torch.randint(0, 256, (4, img_size, img_size, in_chans), dtype=torch.uint8)
    return method.prepare_batch(images, None, torch.Generator().manual_seed(0))


def test_running_statistics_come_from_visible_positions_only() -> None:
    method = make_spark("tinycnn", 32).train()
    first_norm = method.backbone.model.stages[0][1]
    captured = {}
    handle = method.backbone.model.stages[0][0].register_forward_hook(lambda m, a, out: captured.setdefault("x", out))
    images = torch.randn(4, 3, 32, 32)
    mask = method.draw_mask(4, torch.Generator().manual_seed(2), "cpu")
    try:
        method.encode(images, mask)
    finally:
        handle.remove()
    conv_out = captured["x"]  # (B, C, H, W), the hook ran before the sparse re-masking
    visible = (~mask).view(4, *method.grid)
    selected = MaskPyramid(visible).at((32, 32)).squeeze(1).bool()
    expected = first_norm.momentum * conv_out.permute(0, 2, 3, 1)[selected].mean(dim=0)
    assert torch.allclose(first_norm.running_mean, expected, atol=1e-5)


@pytest.mark.parametrize(("name", "img_size", "in_chans"), [("resnet18", 32, 3), ("test_convnext", 32, 1),
                                                            ("tinycnn", 28, 1)])
def test_spark_trains_on_timm_cnns(name: str, img_size: int, in_chans: int) -> None:
    method = make_spark(name, img_size, in_chans).train()
    outputs = method(_batch(method, img_size, in_chans))
    assert torch.isfinite(outputs["loss"])
    outputs["loss"].backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in method.backbone.parameters() if p.grad is not None)
    finest_token = method.decoder.mask_tokens[0]  # coarser maps than the mask grid may have no empty cell
    assert float(finest_token.grad.abs().sum()) > 0


def test_mask_patch_follows_the_coarsest_usable_stride() -> None:
    assert make_spark("tinycnn", 28).patch_size == 4  # strides 1, 2, 4: a 7x7 grid
    assert make_spark("resnet18", 32).patch_size == 8  # stride 32 gives 1x1 at 32 px: the 4x4 map is used
    assert make_spark("resnet18", 32, mask_patch_size=16).grid == (2, 2)


def test_spark_rejects_what_it_cannot_mask() -> None:
    with pytest.raises(PretrainlabError, match="convolutional"):
        make_spark("vit_nano_patch4", 32)
    with pytest.raises(PretrainlabError, match="mask_patch_size"):
        make_spark("tinycnn", 32, mask_patch_size=5)
    with pytest.raises(PretrainlabError, match="GroupNorm"):
        check_sparse_support(nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8)), "gn-net")
