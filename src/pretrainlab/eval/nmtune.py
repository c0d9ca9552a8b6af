"""NMTune: black-box affine tuning of frozen features.

Chen, Wang, Shah, Tao, Wei, Xie, Sugiyama, Raj, "Understanding and Mitigating the Label Noise in
Pre-training on Downstream Tasks", arXiv 2309.17002, section 4. Without touching the backbone, an
MLP h maps frozen features F (B, D) to Z = h(F) (B, D), a linear classifier reads Z, and three
regularisers reshape the feature space that noise in pre-training distorted:

- consistency: || F / ||F|| - Z / ||Z|| ||^2, keeps the pre-trained knowledge;
- covariance: the squared off-diagonal entries of Z's covariance, summed and divided by D
  (decorrelated dimensions, as VICReg's term);
- dominant singular values: minus the mean of the top-k singular values of Z normalised to sum 1,
  which strengthens the dominant directions (noise flattens the spectrum).

The MLP (D -> 4D -> D, BatchNorm + ReLU in between), k = 5 and the weights 1, 0.04 and 0.001 follow
the authors' reference code, which averages the consistency term over the feature dimensions too.
Here the frozen features are computed once, without augmentation: the reference code compares
the weak view's features with the strong view's transformed ones, which would need the backbone
on every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.eval.classifier_training import LossFunction


@dataclass(frozen=True)
class NMTuneWeights:
    consistency: float = 1.0
    covariance: float = 0.04
    singular: float = 0.001
    top_k: int = 5


class FeatureMLPClassifier(nn.Module):
    """Z = h(F) with h: D -> ratio * D -> D, then a linear classifier on Z.

    Args:
        dim: frozen feature size D.
        num_classes: K.
        ratio: hidden width as a multiple of D.
    """

    def __init__(self, dim: int, num_classes: int, ratio: int = 4) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(dim, ratio * dim), nn.BatchNorm1d(ratio * dim), nn.ReLU(),
                                       nn.Linear(ratio * dim, dim))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) -> logits (B, K)."""
        return self.head(self.transform(features))


def consistency_term(features: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the L2-normalised rows of F (B, D) and Z (B, D), over B and D."""
    return F.mse_loss(F.normalize(transformed, dim=1), F.normalize(features, dim=1))


def covariance_term(transformed: torch.Tensor) -> torch.Tensor:
    """sum_{i != j} C_ij^2 / D for C the (D, D) covariance of Z (B, D)."""
    centred = transformed - transformed.mean(dim=0)
    covariance = centred.T @ centred / (len(transformed) - 1)  # (D, D)
    off_diagonal = covariance - torch.diag(torch.diagonal(covariance))
    return off_diagonal.pow(2).sum() / transformed.shape[1]


def singular_value_term(transformed: torch.Tensor, top_k: int) -> torch.Tensor:
    """Minus the mean of the k largest singular values of Z (B, D), the spectrum normalised to sum 1."""
    singular_values = torch.linalg.svdvals(transformed)  # descending
    return -(singular_values / singular_values.sum())[:top_k].mean()


def nmtune_loss(labels: torch.Tensor, weights: NMTuneWeights) -> LossFunction:
    """Cross-entropy on `labels[indices]` plus the three weighted regularisers, for a `FeatureMLPClassifier`."""

    def loss(model: nn.Module, features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        transformed = model.transform(features)  # (B, D)
        total = F.cross_entropy(model.head(transformed), labels[indices])
        total = total + weights.consistency * consistency_term(features, transformed)
        total = total + weights.covariance * covariance_term(transformed)
        return total + weights.singular * singular_value_term(transformed, weights.top_k)

    return loss
