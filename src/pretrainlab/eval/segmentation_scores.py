"""Pixel-level segmentation scores from a confusion matrix: per-class IoU, mIoU and pixel accuracy (shared by the
dense protocol and ADELE's per-class training curves)."""

from __future__ import annotations

import torch

from pretrainlab.data.segmentation import IGNORE_INDEX


def confusion_matrix(truth: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 pixel counts, rows = true class, columns = predicted, from any-shape id tensors; 255 ignored."""
    truth, predicted = truth.reshape(-1).long(), predicted.reshape(-1).long()
    kept = truth != IGNORE_INDEX
    pairs = truth[kept] * num_classes + predicted[kept]
    return torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """(K,) TP / (TP + FP + FN); NaN for a class that neither occurs nor is predicted."""
    confusion = confusion.double()
    true_positives = confusion.diagonal()
    union = confusion.sum(dim=0) + confusion.sum(dim=1) - true_positives
    return torch.where(union > 0, true_positives / union.clamp(min=1), torch.full_like(union, float("nan")))


def segmentation_scores(confusion: torch.Tensor) -> tuple[float, float]:
    """(mIoU %, pixel accuracy %) of a confusion matrix."""
    miou = float(iou_per_class(confusion).nanmean()) * 100
    accuracy = float(confusion.diagonal().sum()) / max(1, int(confusion.sum())) * 100
    return miou, accuracy
