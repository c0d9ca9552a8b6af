"""`visualize`: activation maximisation, network inversion and DeconvNet / guided-backprop maps of channels.

At the explained layer (--layer, default the CAM layer), the `visualize_channels` channels most active on the
explained images are shown three ways: the regularised image that maximises each (explain/visualize.py), the
natural image that excites it most, and that image's guided-backprop map for the channel (Captum; the plain
gradient on a network without ReLU modules). Network inversion reconstructs the first image from each stage's
(block's) activations.

Records: `maximisation_ratio` (mean over channels of the synthetic image's activation over the best natural
image's: above 1 when the visualisation finds a stronger stimulus than any test image) and
`inversion_error@LAYER` (relative squared error of the reconstruction's activations, lower is better).
Options: visualize_channels (8), visualize_steps (128 optimisation steps), inversion_tv (0.05).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
import torch.nn as nn
from captum.attr import GuidedBackprop, Saliency

from pretrainlab.explain.attribution.gradients import relevance_maps
from pretrainlab.explain.context import ExplainContext
from pretrainlab.explain.figures import image_grid
from pretrainlab.explain.model import PooledBackbone, has_relu_modules, layer_suggestions, resolve_layer, token_reshape
from pretrainlab.explain.registry import AnalysisOutput, register_analysis
from pretrainlab.explain.visualize import channel_activation, invert, maximise_channels


class ChannelScore(nn.Module):
    """images -> the mean activation (B, 1) of one channel of a layer: what guided backprop explains."""

    def __init__(self, model: nn.Module, layer: nn.Module, reshape, channel: int) -> None:  # noqa: ANN001
        super().__init__()
        self.model, self.layer, self.reshape, self.channel = model, layer, reshape, channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_activation(self.model, self.layer, self.reshape, x)[:, self.channel].mean(dim=(1, 2))[:, None]


def to_pixels(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """Normalised (C, S, S) -> (S, S, C) in [0, 1] for figures."""
    return (x * std.view(-1, 1, 1) + mean.view(-1, 1, 1)).clamp(0, 1).permute(1, 2, 0).cpu().numpy()


@register_analysis("visualize", options=("visualize_channels", "visualize_steps", "inversion_tv"))
def visualize(context: ExplainContext) -> AnalysisOutput:
    started = time.perf_counter()
    model, layer, reshape = PooledBackbone(context.backbone).eval(), context.layer, context.reshape
    mean, std = context.mean.to(context.device), context.std.to(context.device)
    x = context.inputs.x
    with torch.no_grad():
        natural = channel_activation(model, layer, reshape, x).mean(dim=(2, 3))  # (N, C_layer)
    count = min(int(context.option("visualize_channels", 8)), natural.shape[1])
    channels = natural.mean(dim=0).argsort(descending=True)[:count].tolist()
    steps = int(context.option("visualize_steps", 128))
    synthetic, reached = maximise_channels(model, layer, reshape, channels, context.size, mean, std, steps=steps,
                                           seed=context.settings.seed)
    best_natural = natural[:, channels].max(dim=0)  # values and image index per channel
    ratio = float((reached / best_natural.values.abs().clamp(min=1e-6)).mean())
    maps = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for channel, image_index in zip(channels, best_natural.indices.tolist(), strict=True):
            score = ChannelScore(model, layer, reshape, channel)
            method = GuidedBackprop(score) if has_relu_modules(model) else Saliency(score)
            maps.append(relevance_maps(method.attribute(x[image_index : image_index + 1].clone().requires_grad_(),
                                                        target=0))[0])
    output = AnalysisOutput()
    pictures = [image.permute(1, 2, 0).cpu().numpy() for image in synthetic]
    pictures += [to_pixels(x[i], mean, std) for i in best_natural.indices.tolist()] + maps
    gradient = "guided backprop" if has_relu_modules(model) else "gradient"
    titles = ([f"max ch {c}" for c in channels] + [f"top image ch {c}" for c in channels]
              + [f"{gradient} ch {c}" for c in channels])
    caption = (f"{context.target.label}, layer {context.layer_name}: the {count} channels most active on {len(x)} "
               f"images of {context.source.spec}; maximisation {steps} steps (Fourier 1/f, jitter 2 px, blur 0.5 px "
               f"every 4 steps), seed {context.settings.seed}")
    output.files.append(image_grid(context.path("visualize.png"), pictures, titles, caption, columns=count,
                                   cmap="gray" if pictures[0].shape[-1] == 1 else None))
    arrays = {"channels": np.array(channels), "maximising_images": synthetic.cpu().numpy(),
              "reached": reached.cpu().numpy(), "best_natural": best_natural.values.cpu().numpy(),
              "guided_maps": np.stack(maps)}
    output.results.append(context.result("visualize", "maximisation_ratio", ratio, started, layer=context.layer_name,
                                         channels=count, steps=steps))
    output.results += inversions(context, model, x[:1], mean, std, steps, arrays, output)
    output.files.append(context.save_arrays("visualize", **arrays))
    return output


def inversions(context: ExplainContext, model: nn.Module, image: torch.Tensor, mean: torch.Tensor,
               std: torch.Tensor, steps: int, arrays: dict, output: AnalysisOutput) -> list:
    """Reconstructions of `image` (1, C, S, S) from each stage's activations; one record per stage."""
    started = time.perf_counter()
    weight = float(context.option("inversion_tv", 0.05))
    names = layer_suggestions(context.backbone)
    reshape = token_reshape(context.backbone, context.size, context.size)
    pictures, titles, results = [to_pixels(image[0], mean, std)], ["input"], []
    for name in context.progress(names, "inversion"):
        reconstruction, error = invert(model, resolve_layer(context.backbone, name), reshape, image, mean, std,
                                       steps=steps, tv_weight=weight, seed=context.settings.seed)
        arrays[f"inversion_{name}"] = reconstruction.cpu().numpy()
        pictures.append(reconstruction[0].permute(1, 2, 0).cpu().numpy())
        titles.append(f"{name}: err {error:.3f}")
        results.append(context.result("visualize", f"inversion_error@{name}", error, started, False, steps=steps,
                                      tv_weight=weight))
    caption = (f"{context.target.label}: network inversion (1412.0035) of one test image of {context.source.spec} "
               f"from each stage, {steps} Adam steps, TV weight {weight}, seed {context.settings.seed}")
    output.files.append(image_grid(context.path("inversion.png"), pictures, titles, caption, columns=len(pictures)))
    return results
