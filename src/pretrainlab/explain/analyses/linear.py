"""`linear`: linear interpreters (LinearScope) of a piecewise-linear backbone + probe (explain/linear_interpreter.py).

For each of the first `linear_images` explained images: the exact affine system f(x) = A x + b of the network with
its gates frozen at x; the rows of A for the explained class (its template) and its contribution map A_c * x; the
rows and columns of the system of the last feature map (a centre unit's effective filter; how the centre input
pixel spreads over the map). Records: `bias_share` (%, mean over images of |b_c| / (|(A x)_c| + |b_c|) for the
explained class; the paper finds networks rely heavily on biases) and `max_error` (largest |A x + b - f(x)|
relative to max |f(x)|: float rounding only). Options: linear_images (default 4).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pretrainlab.backbones import Backbone
from pretrainlab.errors import PretrainlabError
from pretrainlab.explain.context import ExplainContext
from pretrainlab.explain.figures import image_grid
from pretrainlab.explain.linear_interpreter import FrozenGates, bias_share, check_piecewise_linear, linear_system
from pretrainlab.explain.registry import AnalysisOutput, register_analysis


def piecewise_linear_needed(backbone: Backbone) -> str | None:
    try:
        check_piecewise_linear(backbone)
    except PretrainlabError as error:
        return str(error).replace("the linear interpreter needs", "needs")
    return None


class LastMap(torch.nn.Module):
    """images -> the backbone's last feature map (B, C, h, w), flattened to (B, C h w)."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.feature_maps(x)[-1].flatten(1)


def signed(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) signed values -> (H, W) in [0, 1] with 0.5 at zero (summed over channels)."""
    values = image.sum(axis=0) if image.ndim == 3 else image
    peak = np.abs(values).max() or 1.0
    return (0.5 + 0.5 * values / peak).astype(np.float32)


def map_rows_and_columns(backbone: Backbone, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(effective filter of the most active centre unit (C, H, W), spread of the centre input pixel (h, w))."""
    model = LastMap(backbone).eval()
    gates = FrozenGates(model)
    with gates.hooks():
        maps = backbone.feature_maps(x)[-1]  # records the gates; (1, C, h, w)
        _, channels, height, width = maps.shape
        centre = (height // 2) * width + width // 2
        channel = int(maps[0, :, height // 2, width // 2].argmax())
        probe = x.detach().clone().requires_grad_(True)
        row = torch.autograd.grad(gates.frozen_forward(probe)[0, channel * height * width + centre], probe)[0][0]
        with torch.no_grad():
            bias = gates.frozen_forward(torch.zeros_like(x))[0]
            pixel = torch.zeros_like(x)
            pixel[..., x.shape[-2] // 2, x.shape[-1] // 2] = 1.0
            column = (gates.frozen_forward(pixel)[0] - bias).view(channels, height, width).abs().sum(0)
    return row.cpu().numpy(), column.cpu().numpy()


@register_analysis("linear", options=("linear_images",), needs=piecewise_linear_needed)
def linear(context: ExplainContext) -> AnalysisOutput:
    started = time.perf_counter()
    context.require_classes("linear")
    model = context.classifier.model
    images, classes = context.explained
    count = min(int(context.option("linear_images", 4)), len(images))
    shares, errors, pictures, titles = [], [], [], []
    arrays: dict[str, np.ndarray] = {"image_index": images[:count], "classes": classes[:count]}
    for item in context.progress(range(count), "linear systems"):
        x = context.inputs.x[images[item] : images[item] + 1]
        matrix, bias, output = linear_system(model, x)
        cls = int(classes[item])
        shares.append(float(bias_share(matrix, bias, x)[cls]))
        errors.append(float((matrix @ x.reshape(-1) + bias - output).abs().max() / output.abs().max().clamp(min=1e-12)))
        template = matrix[cls].view(x.shape[1:]).cpu().numpy()
        row, column = map_rows_and_columns(context.backbone, x)
        arrays.update({f"templates_{item}": matrix.view(-1, *x.shape[1:]).cpu().numpy(),
                       f"bias_{item}": bias.cpu().numpy(), f"unit_filter_{item}": row, f"pixel_spread_{item}": column})
        pictures += [context.inputs.pixels[images[item]], signed(template), signed(template * x[0].cpu().numpy()),
                     signed(row), column / (column.max() or 1.0)]
        titles += [f"class {cls}: bias {shares[-1] * 100:.0f} %", "row A_c (template)", "A_c * x (contribution)",
                   "centre unit's filter", "centre pixel's spread"]
    caption = (f"{context.target.label} + linear probe on {context.source.spec}: exact affine systems with gates "
               f"frozen at each input (1908.05168); signed maps grey = 0; max |Ax+b-f(x)|/max|f| = {max(errors):.1e}")
    output = AnalysisOutput()
    output.files.append(image_grid(context.path("linear.png"), pictures, titles, caption, columns=5))
    output.files.append(context.save_arrays("linear", bias_share=np.array(shares), relative_error=np.array(errors),
                                            **arrays))
    output.results += [context.result("linear", "bias_share", float(np.mean(shares)) * 100, started, False,
                                      images=count),
                       context.result("linear", "max_error", float(max(errors)), started, False, images=count)]
    return output
