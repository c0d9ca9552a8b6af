"""Drop-path (stochastic depth) for fine-tuning a copy of a backbone.

Huang, Sun, Liu, Sedra, Weinberger, "Deep Networks with Stochastic Depth", arXiv 1603.09382: in
training, each residual branch of each image is dropped with a probability that grows linearly with
depth up to `rate` (timm's `drop_path_rate` rule); at test time every branch is kept. A fine-tuning
regulariser in MAE's recipe (arXiv 2111.06377) and one of the three factors the medical MAE study
(arXiv 2210.12843) finds significant. timm builds the drop-path layers when a model is created, so
the backbone is re-created by name with `drop_path_rate` and given the trained weights (the layers
hold no parameters), instead of patching modules of the trained model.
"""

from __future__ import annotations

import torch.nn as nn
from timm.layers import DropPath

from pretrainlab.backbones.adapter import Backbone
from pretrainlab.backbones.factory import create_backbone
from pretrainlab.errors import PretrainlabError


def check_rate(rate: object) -> float:
    """`rate` as a probability in [0, 1), else PretrainlabError."""
    try:
        value = float(rate)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(rate, bool) or not 0 <= value < 1:
        raise PretrainlabError(f"drop_path is the deepest block's drop probability, a number in [0, 1) "
                               f"(0.1-0.2 in MAE's fine-tuning), got {rate!r}")
    return value


def drop_path_rates(module: nn.Module) -> list[float]:
    """The drop probability of every drop-path layer of `module`, in module order."""
    return [float(layer.drop_prob) for layer in module.modules() if isinstance(layer, DropPath)]


def with_drop_path(backbone: nn.Module, rate: float) -> nn.Module:
    """`backbone` with drop-path up to `rate` (a new module with the same weights); itself when rate is 0."""
    if check_rate(rate) == 0:
        return backbone
    if not isinstance(backbone, Backbone):
        raise PretrainlabError(f"drop_path needs a timm backbone; {type(backbone).__name__} is a wrapped one")
    kwargs = {key: value for key, value in backbone.create_kwargs.items()
              if key not in ("img_size", "in_chans", "num_classes")}
    refused = PretrainlabError(f"backbone '{backbone.name}' has no drop-path layers (no residual blocks to drop); "
                               "drop_path works on vision transformers and timm's ResNets and ConvNeXts")
    try:
        rebuilt = create_backbone(backbone.name, int(backbone.create_kwargs.get("img_size", 224)),
                                  int(backbone.create_kwargs.get("in_chans", 3)), check=False,
                                  **kwargs, drop_path_rate=rate)
    except PretrainlabError:  # the model does not take drop_path_rate
        raise refused from None
    if not drop_path_rates(rebuilt):  # it takes the keyword but has no residual branches to drop
        raise refused
    rebuilt.model.load_state_dict(backbone.model.state_dict())
    return rebuilt.to(next(backbone.parameters()).device).train(backbone.training)
