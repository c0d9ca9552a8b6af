"""Synchronised batch normalisation that also runs on CPU processes (gloo), for `--sync-batchnorm`.

PyTorch's `nn.SyncBatchNorm` only runs on GPUs (its kernels gather statistics with CUDA code; it raises
on CPU tensors, and DDP refuses to wrap it on a CPU module). On GPUs `--sync-batchnorm` uses it; elsewhere
each norm becomes a `GlobalBatchNorm1d/2d/3d` (a subclass of the norm it replaces, so isinstance checks and
state dicts are unchanged) that computes the statistics of the global batch with two differentiable
all-reduces (sum, then the centred sum of squares). Backward
through the all-reduce sums every rank's gradient, so each rank's input receives the gradient of the sum
of the per-rank losses, which DDP's (and FSDP's) gradient averaging turns into that of their mean: the
same gradient as one process normalising the whole batch.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pretrainlab.distributed import all_reduce_with_grad, is_distributed


class GlobalBatchNormMixin:
    """Training-mode batch statistics all-reduced over the process group, differentiably."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (torch's argument name)
        if not (self.training and is_distributed()):
            return super().forward(input)
        channels = input.shape[1]
        dims = [d for d in range(input.ndim) if d != 1]
        count = all_reduce_with_grad(torch.tensor([input.numel() / channels], dtype=input.dtype))  # (1,)
        mean = all_reduce_with_grad(input.sum(dims)) / count  # (C,)
        shape = [1, channels] + [1] * (input.ndim - 2)
        centred = input - mean.view(shape)
        variance = all_reduce_with_grad(centred.pow(2).sum(dims)) / count  # biased, for normalising
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.detach(), variance.detach() * count / (count - 1).clamp(min=1))
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_variance: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased_variance.to(self.running_var.dtype), momentum)


class GlobalBatchNorm1d(GlobalBatchNormMixin, nn.BatchNorm1d):
    pass


class GlobalBatchNorm2d(GlobalBatchNormMixin, nn.BatchNorm2d):
    pass


class GlobalBatchNorm3d(GlobalBatchNormMixin, nn.BatchNorm3d):
    pass


GLOBAL_NORMS = {nn.BatchNorm1d: GlobalBatchNorm1d, nn.BatchNorm2d: GlobalBatchNorm2d, nn.BatchNorm3d: GlobalBatchNorm3d}


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Synchronises every plain batch norm of `module` (in place; returns it): PyTorch's SyncBatchNorm on GPUs,
    the `GlobalBatchNorm*` of the same dimensionality elsewhere (same parameters, buffers and state dict keys).

    A norm layer that subclasses BatchNorm with extra behaviour (timm's BatchNormAct2d: activation and dropout)
    is left alone rather than stripped of it, on both paths.
    """
    if any(parameter.is_cuda for parameter in module.parameters()):
        return _replace_norms(module, lambda norm: nn.SyncBatchNorm.convert_sync_batchnorm(norm))
    return _replace_norms(module, _global_norm)


def _global_norm(norm: nn.Module) -> nn.Module:
    converted = GLOBAL_NORMS[type(norm)](norm.num_features, norm.eps, norm.momentum, norm.affine,
                                         norm.track_running_stats)
    if norm.affine:
        converted.weight, converted.bias = norm.weight, norm.bias
    converted.running_mean, converted.running_var = norm.running_mean, norm.running_var
    converted.num_batches_tracked = norm.num_batches_tracked
    return converted.train(norm.training)


def _replace_norms(module: nn.Module, convert) -> nn.Module:  # noqa: ANN001
    for name, child in module.named_children():
        if type(child) in GLOBAL_NORMS:
            module.add_module(name, convert(child))
        else:
            _replace_norms(child, convert)
    return module
