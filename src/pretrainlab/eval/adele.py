"""ADELE: adaptive early-learning correction for training a segmentation head on noisy masks.

Liu, Liu, Zhu, Shen, Fernandez-Granda, "Adaptive Early-Learning Correction for Segmentation from Noisy
Annotations", arXiv 2110.03740 (CVPR 2022). A network first fits the clean pixels of each class ("early
learning") and only later memorises the wrong ones, at a different time for every class. ADELE therefore
1. records, after every epoch, each class's IoU between the predictions and the (noisy) training masks;
2. fits f(t) = a (1 - exp(-t^b / c)) to each class's curve (a, b in [0, 1], c >= 0) and marks the class's
   memorisation onset at the first epoch t where the fitted slope has fallen by a share r of its start,
   |f'(1) - f'(t)| / |f'(1)| > r (r = 0.9 in the paper);
3. from its onset on, corrects that class's labels every epoch: pixels whose prediction, averaged over
   rescaled inputs, gives the class a probability above a confidence (0.8) are relabelled to it;
4. throughout, a multi-scale consistency term makes the predictions on rescaled inputs (x0.7, x1.5) agree
   with their average q: sum_s KL(q || p_s), beside the cross-entropy on the original scale.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import OptimizeWarning, curve_fit

from pretrainlab.data.segmentation import IGNORE_INDEX
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.segmentation_scores import confusion_matrix, iou_per_class

log = logging.getLogger(__name__)

SCALES = (0.7, 1.5)  # the paper's rescaled copies beside the original input
MIN_POINTS = 3  # a curve needs this many epochs before a fit means anything


def iou_curve(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """f(t) = a (1 - exp(-t^b / c)): a rise that flattens, the shape of a training IoU curve."""
    return a * (1 - np.exp(-np.power(t, b) / c))


def iou_curve_slope(t: np.ndarray | float, a: float, b: float, c: float) -> np.ndarray:
    """f'(t) = a b / c t^(b - 1) exp(-t^b / c)."""
    t = np.asarray(t, dtype=float) + 1e-6  # t^(b - 1) at t = 0
    return a * b / c * np.power(t, b - 1) * np.exp(-np.power(t, b) / c)


def fit_iou_curve(ious: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) of f fitted to ious (T,) at epochs 1..T, later epochs weighted more (as the reference code)."""
    epochs = np.arange(1, len(ious) + 1, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        parameters, _ = curve_fit(iou_curve, epochs, ious, p0=(1.0, 1.0, 1.0), method="trf",
                                  sigma=np.geomspace(1, 0.1, len(ious)), absolute_sigma=True,
                                  bounds=([0, 0, 1e-6], [1, 1, np.inf]), maxfev=5000)
    return tuple(float(p) for p in parameters)  # type: ignore[return-value]


def memorisation_started(ious: np.ndarray, threshold: float = 0.9) -> bool:
    """Whether the curve so far (T,) has reached its onset at its last epoch: relative slope drop > threshold."""
    if len(ious) < MIN_POINTS or not np.isfinite(ious).all():
        return False
    try:
        a, b, c = fit_iou_curve(ious)
    except (RuntimeError, ValueError):  # no fit: do not correct on a guess
        return False
    first = iou_curve_slope(1.0, a, b, c)
    if not first > 0:
        return False
    return bool(abs(first - iou_curve_slope(float(len(ious)), a, b, c)) / abs(first) > threshold)


def memorisation_onset(ious: np.ndarray, threshold: float = 0.9) -> int | None:
    """The first epoch t (1-based) at which `memorisation_started(ious[:t])`, or None: what ADELE sees online."""
    for t in range(MIN_POINTS, len(ious) + 1):
        if memorisation_started(ious[:t], threshold):
            return t
    return None


@dataclass
class AdeleSettings:
    """Args:
        threshold: r, the relative slope drop that marks the onset (0.9).
        confidence: probability above which a pixel is relabelled to a corrected class (0.8).
        consistency: weight of the multi-scale consistency term (1.0 here).
    """

    threshold: float = 0.9
    confidence: float = 0.8
    consistency: float = 1.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AdeleSettings:
        """The defaults, overridden by the dense options adele_threshold, adele_confidence, adele_consistency."""
        values = {}
        for name, low, high in (("threshold", 0, 1), ("confidence", 0, 1), ("consistency", 0, float("inf"))):
            given = options.get(f"adele_{name}")
            if given is None:
                continue
            try:
                values[name] = float(given)
            except (TypeError, ValueError):
                values[name] = float("nan")
            inside = low < values[name] < high if name != "consistency" else low <= values[name] < high
            if not inside:
                bounds = "in (0, 1)" if name != "consistency" else ">= 0"
                raise PretrainlabError(f"option adele_{name} must be a number {bounds}, got {given!r}")
        return cls(**values)


@dataclass
class AdeleState:
    """What ADELE learns about the run: the per-class training IoU curves, onsets, and the current labels."""

    labels: torch.Tensor  # (N, H, W) int64, the noisy masks, corrected in place after each class's onset
    noisy: torch.Tensor  # (N, H, W) uint8, the masks as given (the IoU curves are measured against these)
    curves: list[list[float]] = field(default_factory=list)  # per class, one IoU per epoch
    onsets: dict[int, int] = field(default_factory=dict)  # class -> epoch
    corrected_pixels: int = 0


def consistency_loss(logits_by_scale: list[torch.Tensor]) -> torch.Tensor:
    """sum_s KL(q || p_s) per pixel, averaged, with q the mean of the scales' softmaxes; logits (B, K, H, W)."""
    log_probabilities = [F.log_softmax(logits, dim=1) for logits in logits_by_scale]
    average = torch.stack([lp.exp() for lp in log_probabilities]).mean(dim=0)  # q, (B, K, H, W)
    log_average = average.clamp(min=1e-8).log()
    return sum((average * (log_average - lp)).sum(dim=1).mean() for lp in log_probabilities)


def adele_loss(state: AdeleState, scaled_maps: list[torch.Tensor], settings: AdeleSettings
               ) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy on the current labels at scale 1 + consistency with the rescaled inputs' maps (N, C, h', w')."""

    def loss(head: nn.Module, maps: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        logits = head(maps)  # (B, K, H, W)
        cross_entropy = F.cross_entropy(logits, state.labels[indices], ignore_index=IGNORE_INDEX)
        rescaled = [head(scaled[indices.to(scaled.device)].to(maps.device)) for scaled in scaled_maps]
        return cross_entropy + settings.consistency * consistency_loss([logits, *rescaled])

    return loss


@torch.no_grad()
def end_of_epoch(state: AdeleState, head: nn.Module, all_maps: list[torch.Tensor], num_classes: int,
                 settings: AdeleSettings, epoch: int, device: torch.device, batch_size: int = 64) -> None:
    """Measures the per-class IoU against the noisy masks, detects onsets, corrects the onset classes' labels."""

    was_training = head.training
    head.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    corrected = sorted(state.onsets)
    for start in range(0, len(state.labels), batch_size):
        rows = slice(start, start + batch_size)
        probabilities = [F.softmax(head(maps[rows].to(device)), dim=1) for maps in all_maps]
        confusion += confusion_matrix(state.noisy[rows].to(device), probabilities[0].argmax(dim=1), num_classes)
        if corrected:
            average = torch.stack(probabilities).mean(dim=0)  # q, (B, K, H, W)
            confidence, predicted = average.max(dim=1)  # (B, H, W)
            relabel = (confidence > settings.confidence) & torch.isin(predicted, torch.tensor(corrected, device=device))
            relabel &= state.labels[rows] != IGNORE_INDEX
            state.corrected_pixels += int((relabel & (state.labels[rows] != predicted)).sum())
            state.labels[rows][relabel] = predicted[relabel]
    head.train(was_training)
    ious = iou_per_class(confusion).numpy()
    if not state.curves:
        state.curves = [[] for _ in range(num_classes)]
    for c in range(num_classes):
        state.curves[c].append(float(ious[c]))
        if c not in state.onsets and memorisation_started(np.array(state.curves[c]), settings.threshold):
            state.onsets[c] = epoch
            log.info("ADELE: class %d reaches its memorisation onset at epoch %d; correcting its labels", c, epoch)
