"""`filters`: degenerate share, variance entropy and orthogonality of every 3x3 convolution (explain/filters.py).

Records: the kernel-weighted means over layers, `degenerate` (lower is better), `variance_entropy` and
`orthogonality`. The same numbers are logged during pre-training with `pretrainlab pretrain --filters-every N`.
"""

from __future__ import annotations

import time

import numpy as np

from pretrainlab.explain.context import ExplainContext
from pretrainlab.explain.figures import filter_health_figure
from pretrainlab.explain.filters import conv3x3_layers, filter_health, summarise
from pretrainlab.explain.registry import AnalysisOutput, convolutions_needed, register_analysis

FIRST_LAYER_KERNELS = 64  # kernels of the first 3x3 layer drawn in the figure


@register_analysis("filters", needs=convolutions_needed)
def filters(context: ExplainContext) -> AnalysisOutput:
    started = time.perf_counter()
    model = context.backbone.model
    health = filter_health(model)
    names = list(health)
    degenerate = np.array([h.degenerate for h in health.values()])
    entropy = np.array([h.entropy for h in health.values()])
    orthogonal = np.array([h.orthogonality for h in health.values()])
    first = next(iter(conv3x3_layers(model).values())).weight.detach().cpu().float()
    kernels = first.reshape(-1, 3, 3)[:FIRST_LAYER_KERNELS].numpy()
    output = AnalysisOutput()
    output.files.append(context.save_arrays("filters", layers=np.array(names), degenerate=degenerate,
                                            variance_entropy=entropy, orthogonality=orthogonal,
                                            kernels=np.array([h.kernels for h in health.values()])))
    summary = summarise(health)
    caption = (f"{context.target.label}: every 3x3 convolution's kernels (weights only, no data); degenerate: max |w| "
               "< 1 % of the layer's; entropy of the kernels' SVD variance shares / log 9; 1 - mean |cos| of filters")
    title = (f"filter health of {context.target.label}: degenerate {summary['filters_degenerate']:.3f}, entropy "
             f"{summary['filters_entropy']:.3f}, orthogonality {summary['filters_orthogonality']:.3f}")
    output.files.append(filter_health_figure(context.path("filters.png"), names, degenerate, entropy, orthogonal,
                                             kernels, title, caption))
    layers = {"layers": len(names)}
    output.results += [
        context.result("filters", "degenerate", summary["filters_degenerate"], started, False, **layers),
        context.result("filters", "variance_entropy", summary["filters_entropy"], started, **layers),
        context.result("filters", "orthogonality", summary["filters_orthogonality"], started, **layers),
    ]
    return output
