"""Linear probe: multinomial logistic regression on frozen, standardised features.

Full-batch L-BFGS, with the L2 strength chosen on a stratified validation slice of the training
split and the classifier then refit on the whole training split, so no test image is used for
model selection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pretrainlab.data.splits import stratified_indices

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)
FALLBACK_L2 = 1e-3  # the middle of the grid, when too few images are left to choose on


def fit_lbfgs_linear(features: torch.Tensor, out_dim: int, data_loss: Callable[[torch.Tensor], torch.Tensor],
                     l2: float, max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear map of standardised features (N, D) -> weight (D, out_dim), bias (out_dim,), fitted full-batch by
    L-BFGS on data_loss(logits (N, out_dim)) + l2 * |weight|^2."""
    weight = torch.zeros(features.shape[1], out_dim, requires_grad=True)
    bias = torch.zeros(out_dim, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = data_loss(features @ weight + bias) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float,
                 max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """features (N, D) standardised, labels (N,) -> weight (D, K), bias (K,)."""
    return fit_lbfgs_linear(features, num_classes, lambda logits: F.cross_entropy(logits, labels), l2, max_iter)


def feature_statistics(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (D,) of training features (N, D); the floored std keeps constant features finite."""
    return train.mean(dim=0), train.std(dim=0).clamp(min=1e-6)


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = feature_statistics(train)
    return [(x - mean) / std for x in (train, *others)]


@dataclass
class LinearProbe:
    """A fitted probe: standardisation by the training features' mean and std (D,), then weight (D, K), bias (K,)."""

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    l2: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """features (M, D) -> logits (M, K)."""
        return ((features.double() - self.mean) / self.std).float() @ self.weight + self.bias


def fit_linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, num_classes: int,
                     seed: int = 0) -> LinearProbe:
    """Chooses the L2 strength on a stratified 10 % validation slice drawn by `seed`, then refits on all of train."""
    fit_idx, val_idx = stratified_indices(train_labels.numpy(), 0.1, seed)
    if len(val_idx) == 0 or len(fit_idx) == 0:  # one image per class: nothing to validate on
        return _refit(train_features, train_labels, num_classes, FALLBACK_L2)
    fit_x, val_x = standardise(train_features[fit_idx].double(), train_features[val_idx].double())
    fit_x, val_x = fit_x.float(), val_x.float()
    best_l2, best_accuracy = L2_GRID[0], -1.0
    for l2 in L2_GRID:
        weight, bias = fit_logistic(fit_x, train_labels[fit_idx], num_classes, l2)
        accuracy = float(((val_x @ weight + bias).argmax(1) == train_labels[val_idx]).float().mean())
        if accuracy > best_accuracy:
            best_l2, best_accuracy = l2, accuracy
    return _refit(train_features, train_labels, num_classes, best_l2)


def _refit(train_features: torch.Tensor, train_labels: torch.Tensor, num_classes: int, l2: float) -> LinearProbe:
    train_double = train_features.double()
    mean, std = feature_statistics(train_double)
    weight, bias = fit_logistic(((train_double - mean) / std).float(), train_labels, num_classes, l2)
    return LinearProbe(weight, bias, mean, std, l2)


def linear_probe_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                          test_labels: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """Top-1 test accuracy in percent and the chosen L2 strength."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    probe = fit_linear_probe(train_features, train_labels, num_classes, seed)
    accuracy = float((probe.logits(test_features).argmax(1) == test_labels).float().mean()) * 100
    return accuracy, probe.l2
