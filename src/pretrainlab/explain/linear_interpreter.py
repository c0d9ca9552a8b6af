"""Linear interpreters of piecewise-linear networks (Michelini, Liu, Gao and Zhu, "A Tour of Convolutional Networks
Guided by Linear Interpreters", ICCV 2019, arXiv 1908.05168; their tool: LinearScope).

A network of convolutions, linear layers, batch norm in eval mode, average pooling, ReLU and max-pooling is
piecewise affine: for one input x, freeze every non-linearity's decision (which ReLU units pass, which position each
max-pool picks) and the network becomes an affine map y = A(x) x + b(x) that gives exactly f(x) at x. Here the
frozen network runs beside the original: hooks replay the recorded gates (a ReLU multiplies its input by the
recorded 0/1 mask, a max-pool gathers the recorded positions), so b = frozen(0) collects every bias the gates let
through (convolution biases, batch-norm shifts) and column j of A is frozen(e_j) - b. Rows of A (one per output:
per-class templates) and columns (how one input pixel spreads) are images; |b_c| / (|(A x)_c| + |b_c|) is the share
of logit c that comes from the biases, which the paper finds large.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.errors import PretrainlabError

LINEAR_LEAVES = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d,
                 nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity, nn.Dropout)


def check_piecewise_linear(model: nn.Module) -> None:
    """Raises with the offending module types unless every leaf module is affine, ReLU or max-pooling."""
    leaves = [module for module in model.modules() if not list(module.children())]
    offending = sorted({type(module).__name__ for module in leaves if not isinstance(module, LINEAR_LEAVES)})
    if offending:
        raise PretrainlabError(f"the linear interpreter needs a piecewise-linear network (convolutions, linear, "
                               f"batch norm, average pooling, ReLU, max-pooling); this one has {', '.join(offending)}")


class FrozenGates:
    """Records the gates of ReLU and max-pool modules on one input, then replays them (see module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.relu_masks: dict[nn.Module, torch.Tensor] = {}
        self.pool_indices: dict[nn.Module, torch.Tensor] = {}
        self.frozen = False
        self._inputs: dict[nn.Module, torch.Tensor] = {}

    def _relu_pre(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if self.frozen:  # an in-place ReLU overwrites its input: keep what it was
            self._inputs[module] = inputs[0].clone()

    def _relu(self, module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
        if not self.frozen:
            self.relu_masks[module] = (output > 0).to(output.dtype)
            return None
        return self._inputs.pop(module) * self.relu_masks[module]

    def _pool(self, module: nn.MaxPool2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
              ) -> torch.Tensor | None:
        x = inputs[0]
        if not self.frozen:
            _, indices = F.max_pool2d(x, module.kernel_size, module.stride, module.padding, module.dilation,
                                      module.ceil_mode, return_indices=True)
            self.pool_indices[module] = indices
            return None
        indices = self.pool_indices[module]
        picked = x.flatten(2).gather(2, indices.flatten(2).expand(x.shape[0], -1, -1))
        return picked.view(x.shape[0], *indices.shape[1:])

    @contextlib.contextmanager
    def hooks(self) -> Iterator[FrozenGates]:
        handles = []
        for module in self.model.modules():
            if isinstance(module, nn.ReLU):
                handles.append(module.register_forward_pre_hook(self._relu_pre))
                handles.append(module.register_forward_hook(self._relu))
            elif isinstance(module, nn.MaxPool2d):
                handles.append(module.register_forward_hook(self._pool))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def frozen_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The affine network of the recorded gates on x (B, ...) (the gates broadcast over the batch)."""
        self.frozen = True
        try:
            return self.model(x)
        finally:
            self.frozen = False


@torch.no_grad()
def linear_system(model: nn.Module, x: torch.Tensor, basis_batch: int = 256
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For one input x (1, C, H, W): (A (K, C H W), b (K,), f(x) (K,)) with f(x) = A x + b for a piecewise-linear
    model in eval mode. Columns of A come from the frozen network on the input basis, `basis_batch` at a time."""
    check_piecewise_linear(model)
    model.eval()
    gates = FrozenGates(model)
    with gates.hooks():
        output = model(x)[0]  # records the gates
        bias = gates.frozen_forward(torch.zeros_like(x))[0]
        size = x[0].numel()
        columns = []
        for start in range(0, size, basis_batch):
            count = min(basis_batch, size - start)
            basis = torch.zeros(count, size, dtype=x.dtype, device=x.device)
            basis[torch.arange(count), torch.arange(start, start + count)] = 1.0
            columns.append(gates.frozen_forward(basis.view(count, *x.shape[1:])) - bias)  # (count, K)
    return torch.cat(columns).T.contiguous(), bias, output


def bias_share(matrix: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(K,) share of each output that comes from the bias: |b| / (|A x| + |b|)."""
    linear_part = matrix @ x.reshape(-1)
    return bias.abs() / (linear_part.abs() + bias.abs()).clamp(min=1e-12)
