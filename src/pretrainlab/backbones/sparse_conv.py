"""Sparse convolution emulated on any timm CNN, for SparK's masked modelling of convolutional networks.

Tian, Jiang, Yuan, Wang, Zhang, "Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked
Modeling" (SparK), arXiv 2301.03580.

A sparse convolution computes only at visible positions and leaves masked ones empty. On a dense CNN the
same result follows from three rules, applied at every layer's own resolution:
- every 2-D convolution and pooling sees zeros at masked positions (input re-masked) and emits zeros there
  (output re-masked), so no layer reads anything but visible content; per-position layers between them
  (activations, LayerNorm2d, the Linear MLPs of ConvNeXt) cannot move information sideways;
- BatchNorm computes its batch statistics over visible positions only (a dense BatchNorm would count the
  empty positions as zeros, shifting the statistics with the mask ratio) and outputs zeros at masked ones;
- a resolution finer than the mask grid repeats each mask cell (nearest); a coarser one marks a cell visible
  when any of the finer cells it covers is visible.

How, without touching timm: `sparse_convolution(model, visible)` is a context manager that, on this one model
instance, registers forward hooks on its convolutions and poolings and swaps each BatchNorm child for a
`MaskedBatchNorm2d` wrapper that shares the original's parameters and running buffers (same tensor objects).
On exit, also after an exception, the hooks are removed and the original modules put back. Why this is safe
for export: the swap only lives inside the `with` block of one forward pass; checkpoints, `state_dict`,
`backbone.safetensors`, kNN monitoring and evaluation all run outside it and see the unmodified timm module
tree with its usual keys, and the updates made inside (gradients, running statistics) land in the original
tensors. Not supported: `torch.compile` of the forward (it would trace module swapping), two threads running
the same model instance at once, and spatial normalisations other than BatchNorm (GroupNorm, InstanceNorm).
Under DDP with `sync_batchnorm` the wrapper uses each process's own visible-position statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.errors import PretrainlabError

SPATIAL_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)  # subclasses included (timm's Conv2dSame, ...)
BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)  # timm's BatchNormAct2d is a BatchNorm2d
UNSUPPORTED_NORMS = (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


class MaskPyramid:
    """The visibility mask at every resolution a network produces, computed once per resolution.

    Args:
        visible: (B, h, w) bool, True = visible cell of the mask grid.
    """

    def __init__(self, visible: torch.Tensor) -> None:
        self.visible = visible
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def at(self, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """(B, 1, H, W) float, 1 = visible, for a feature map of spatial size `size`."""
        size = (int(size[0]), int(size[1]))
        if size not in self._cache:
            grid = self.visible.unsqueeze(1).float()  # (B, 1, h, w)
            if size[0] >= grid.shape[-2] and size[1] >= grid.shape[-1]:
                self._cache[size] = F.interpolate(grid, size=size, mode="nearest")
            else:  # coarser than the mask grid: visible when any covered cell is
                self._cache[size] = F.adaptive_max_pool2d(grid, size)
        return self._cache[size]


def masked_batch_norm(x: torch.Tensor, visible: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    """BatchNorm of x (B, C, H, W) with statistics over positions where visible (B, 1, H, W) is 1; zeros elsewhere.

    Mirrors `nn.BatchNorm2d`: batch statistics in training (running averages updated with the unbiased
    variance, momentum or cumulative average), running statistics in eval mode.
    """
    values = x.float()
    use_batch = norm.training or not norm.track_running_stats
    if use_batch:
        count = visible.sum().clamp(min=1.0)
        mean = (values * visible).sum(dim=(0, 2, 3)) / count  # (C,)
        var = ((values - mean.view(1, -1, 1, 1)).pow(2) * visible).sum(dim=(0, 2, 3)) / count
        if norm.training and norm.track_running_stats:
            with torch.no_grad():
                norm.num_batches_tracked.add_(1)
                factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp(min=1.0)
                norm.running_mean.lerp_(mean.detach(), factor)
                norm.running_var.lerp_(unbiased.detach(), factor)
    else:
        mean, var = norm.running_mean, norm.running_var
    out = (values - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + norm.eps)
    if norm.affine:
        out = out * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
    out = out.to(x.dtype)
    for name in ("drop", "act"):  # timm's BatchNormAct2d folds dropout and the activation into the norm
        if isinstance(getattr(norm, name, None), nn.Module):
            out = getattr(norm, name)(out)
    return out * visible.to(out.dtype)


class MaskedBatchNorm2d(nn.Module):
    """Stands in for `norm` during a sparse forward; holds it (same parameters and buffers), never copies it."""

    def __init__(self, norm: nn.BatchNorm2d, pyramid: MaskPyramid) -> None:
        super().__init__()
        self.norm = norm
        self.pyramid = pyramid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_batch_norm(x, self.pyramid.at(x.shape[-2:]), self.norm)


def check_sparse_support(model: nn.Module, name: str) -> None:
    """Raises PretrainlabError when `model` holds a layer the emulation cannot make sparse."""
    for module_name, module in model.named_modules():
        if isinstance(module, UNSUPPORTED_NORMS):
            raise PretrainlabError(
                f"backbone '{name}' normalises with {type(module).__name__} ({module_name}), whose spatial statistics "
                "SparK's sparse emulation does not handle; use a BatchNorm or LayerNorm CNN (ResNet, ConvNeXt, tinycnn)"
            )


def _mask_input(pyramid: MaskPyramid):  # noqa: ANN202
    def hook(_module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        return (x * pyramid.at(x.shape[-2:]).to(x.dtype), *args[1:])

    return hook


def _mask_output(pyramid: MaskPyramid):  # noqa: ANN202
    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            return output  # e.g. max-pooling that also returns indices
        return output * pyramid.at(output.shape[-2:]).to(output.dtype)

    return hook


@contextmanager
def sparse_convolution(model: nn.Module, visible: torch.Tensor) -> Iterator[MaskPyramid]:
    """Within the block, `model` computes as a sparse CNN over the visible cells of `visible` (B, h, w) bool.

    Yields the `MaskPyramid`, whose `at(size)` gives the visibility at any feature-map size. The caller
    zeroes the masked pixels of its input with `pyramid.at(image size)`.
    """
    pyramid = MaskPyramid(visible)
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    handles = []
    try:
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, BATCH_NORMS):
                    parent._modules[child_name] = MaskedBatchNorm2d(child, pyramid)
                    swapped.append((parent, child_name, child))
        for module in model.modules():
            if isinstance(module, SPATIAL_LAYERS):
                handles.append(module.register_forward_pre_hook(_mask_input(pyramid)))
                handles.append(module.register_forward_hook(_mask_output(pyramid)))
        yield pyramid
    finally:
        for handle in handles:
            handle.remove()
        for parent, child_name, child in reversed(swapped):
            parent._modules[child_name] = child
