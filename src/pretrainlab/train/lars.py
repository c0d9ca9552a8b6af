"""LARS: layer-wise adaptive rate scaling for large-batch SGD.

You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks", arXiv 1708.03888; as used by
SimCLR, BYOL and Barlow Twins (biases and norms excluded from adaptation and weight decay).
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-layer step is scaled by trust * ||w|| / ||g + wd * w||.

    Args:
        trust_coefficient: eta in the paper (0.001).
        Parameter groups with `lars_exclude=True` take a plain SGD step.
    """

    def __init__(self, params: list, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8) -> None:
        if lr < 0 or momentum < 0 or trust_coefficient <= 0:
            raise ValueError(f"invalid LARS settings lr={lr} momentum={momentum} trust={trust_coefficient}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 (torch's optimiser signature)
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                update = parameter.grad
                if not group["lars_exclude"]:
                    update = update.add(parameter, alpha=group["weight_decay"])
                    weight_norm, update_norm = parameter.norm(), update.norm()
                    trust = torch.where(
                        (weight_norm > 0) & (update_norm > 0),
                        group["trust_coefficient"] * weight_norm / (update_norm + group["eps"]),
                        torch.ones_like(weight_norm),
                    )
                    update = update * trust
                state = self.state[parameter]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(update).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                parameter.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss
