"""Gradient attributions, on Captum: Saliency, Integrated Gradients, Guided Backprop, DeconvNet.

Saliency: |d logit / d input| (Simonyan et al., arXiv 1312.6034). Integrated Gradients: the path integral of
the gradient from a baseline (here the all-zero normalised image, i.e. the data's mean colour) to the input
(Sundararajan et al., arXiv 1703.01365). Guided Backprop (Springenberg et al., arXiv 1412.6806) and DeconvNet
(Zeiler and Fergus, arXiv 1311.2901) change how ReLU modules pass gradients back; on a network without ReLU
modules (a GELU transformer) they equal the plain gradient, so they are reported as not applicable there.

Every method returns per-pixel relevance (N, H, W): the absolute attribution summed over input channels,
scaled to [0, 1] per image so maps of different methods compare.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn as nn
from captum.attr import Deconvolution, GuidedBackprop, IntegratedGradients, Saliency

from pretrainlab.errors import PretrainlabError, unknown_name_message

GRADIENT_METHODS = ("saliency", "integrated_gradients", "guided_backprop", "deconvnet")
RELU_METHODS = ("guided_backprop", "deconvnet")
IG_STEPS = 32


def attribute(model: nn.Module, inputs: torch.Tensor, classes: torch.Tensor, method: str,
              steps: int = IG_STEPS) -> torch.Tensor:
    """Captum attributions (N, C, H, W) of `classes` (N,) for `inputs` (N, C, H, W)."""
    x = inputs.detach().clone().requires_grad_(True)
    with warnings.catch_warnings():  # Captum warns every call that it hooks ReLU modules
        warnings.simplefilter("ignore", UserWarning)
        if method == "saliency":
            return Saliency(model).attribute(x, target=classes, abs=True)
        if method == "integrated_gradients":
            return IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=classes,
                                                        n_steps=steps, internal_batch_size=len(x) * 8)
        if method == "guided_backprop":
            return GuidedBackprop(model).attribute(x, target=classes)
        if method == "deconvnet":
            return Deconvolution(model).attribute(x, target=classes)
    raise PretrainlabError(unknown_name_message("gradient method", method, GRADIENT_METHODS))


def relevance_maps(attributions: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) attributions -> (N, H, W) float32 in [0, 1]: |a| summed over channels, divided by its max."""
    relevance = attributions.detach().abs().sum(dim=1)  # (N, H, W)
    peak = relevance.flatten(1).max(dim=1).values.clamp(min=1e-12)
    return (relevance / peak[:, None, None]).cpu().numpy().astype(np.float32)


def gradient_maps(model: nn.Module, inputs: torch.Tensor, classes: np.ndarray, method: str,
                  batch_size: int = 16) -> np.ndarray:
    """Relevance maps (N, H, W) in [0, 1] of `method` for `classes` (N,), computed in batches."""
    if method not in GRADIENT_METHODS:
        raise PretrainlabError(unknown_name_message("gradient method", method, GRADIENT_METHODS))
    model.eval()
    maps = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        targets = torch.as_tensor(classes[start : start + batch_size], dtype=torch.long, device=chunk.device)
        maps.append(relevance_maps(attribute(model, chunk, targets, method)))
    return np.concatenate(maps)
