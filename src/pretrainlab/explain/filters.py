"""Filter health of every 3x3 convolution (papers "CNN Filter DB: An Empirical Investigation of Trained
Convolutional Filters", Gavrikov and Keuper, arXiv 2203.15331, and "On filter design in deep CNNs").

Per layer, with the layer's 3x3 kernels K (Cout * Cin of them, 9 weights each):
- degenerate share: kernels whose largest |weight| is below `DEGENERATE_FRACTION` (1 %) of the layer's largest
  |weight|: near-zero kernels that pass nothing on (CNN Filter DB's "sparse" filters);
- variance entropy: the kernels' principal components (SVD of the centred (Cout Cin, 9) matrix), the share of
  variance sigma_i^2 / sum sigma^2 of each, and its entropy divided by log 9: 1 for kernels like white noise
  (random init), lower for structured kernels that share a few patterns, 0 when all kernels are one pattern;
- orthogonality: 1 - mean |cosine| between the distinct output filters (each Cin x 3 x 3, flattened) that are not
  degenerate: 1 for mutually orthogonal filters, 0 for identical (or opposite) ones.
Used by the `filters` analysis and, during training, by the `--filters-every N` monitor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

DEGENERATE_FRACTION = 0.01


@dataclass
class FilterHealth:
    degenerate: float
    entropy: float
    orthogonality: float
    kernels: int


def conv3x3_layers(module: nn.Module) -> dict[str, nn.Conv2d]:
    """Every 3x3 convolution, by its name in `module`."""
    return {name: layer for name, layer in module.named_modules()
            if isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) == (3, 3)}


def degenerate_share(weight: torch.Tensor, fraction: float = DEGENERATE_FRACTION) -> float:
    """weight (Cout, Cin, 3, 3) -> share of kernels with max |w| < fraction x the layer's max |w| (1 if all zero)."""
    peaks = weight.abs().flatten(2).amax(dim=2)  # (Cout, Cin)
    layer_peak = float(peaks.max())
    if layer_peak == 0:
        return 1.0
    return float((peaks < fraction * layer_peak).double().mean())


def variance_entropy(weight: torch.Tensor) -> float:
    """weight (Cout, Cin, 3, 3) -> entropy of the kernels' explained-variance shares over log 9 (0 if no variance)."""
    kernels = weight.reshape(-1, 9).double()
    kernels = kernels - kernels.mean(dim=0)
    singular = torch.linalg.svdvals(kernels)
    variance = singular.pow(2)
    if float(variance.sum()) == 0:
        return 0.0
    share = variance / variance.sum()
    share = share[share > 0]
    return float(-(share * share.log()).sum() / math.log(9))


def orthogonality(weight: torch.Tensor, fraction: float = DEGENERATE_FRACTION) -> float:
    """weight (Cout, Cin, 3, 3) -> 1 - mean |cos| over pairs of non-degenerate output filters (NaN if < 2 remain)."""
    filters = weight.reshape(weight.shape[0], -1).double()
    norms = filters.norm(dim=1)
    kept = filters[norms > fraction * float(norms.max())] if float(norms.max()) > 0 else filters[:0]
    if len(kept) < 2:
        return math.nan
    unit = kept / kept.norm(dim=1, keepdim=True)
    cosine = (unit @ unit.T).abs()
    count = len(kept)
    off_diagonal = (cosine.sum() - cosine.diagonal().sum()) / (count * (count - 1))
    return float(1 - off_diagonal)


def layer_health(weight: torch.Tensor) -> FilterHealth:
    weight = weight.detach().float().cpu()
    return FilterHealth(degenerate_share(weight), variance_entropy(weight), orthogonality(weight),
                        weight.shape[0] * weight.shape[1])


def filter_health(module: nn.Module) -> dict[str, FilterHealth]:
    """Health of every 3x3 convolution of `module`, in order of depth."""
    return {name: layer_health(conv.weight) for name, conv in conv3x3_layers(module).items()}


def summarise(health: dict[str, FilterHealth]) -> dict[str, float]:
    """Kernel-weighted means over layers: the monitor's and the analysis's summary numbers."""
    total = sum(h.kernels for h in health.values())
    orthogonal = [(h.orthogonality, h.kernels) for h in health.values() if not math.isnan(h.orthogonality)]
    return {
        "filters_degenerate": sum(h.degenerate * h.kernels for h in health.values()) / total,
        "filters_entropy": sum(h.entropy * h.kernels for h in health.values()) / total,
        "filters_orthogonality": (sum(o * k for o, k in orthogonal) / sum(k for _, k in orthogonal)
                                  if orthogonal else math.nan),
    }


def filter_monitor_record(module: nn.Module) -> dict[str, object]:
    """What `--filters-every` logs to metrics.jsonl: the summaries, and [degenerate, entropy, orthogonality] of
    each layer."""
    health = filter_health(module)
    if not health:
        return {}
    return {**summarise(health), "filters_layers": {name: [round(h.degenerate, 5), round(h.entropy, 5),
                                                           round(h.orthogonality, 5)] for name, h in health.items()}}
