"""Early-Learning Regularization (ELR) for training on noisy labels.

Liu, Niles-Weed, Razavian, Fernandez-Granda, "Early-Learning Regularization Prevents Memorization
of Noisy Labels", arXiv 2007.00151, section 4: a network first fits the clean labels ("early
learning") and only later memorises the wrong ones. ELR keeps, per training example i, a target
t_i, the temporal ensemble of the model's own predictions,

    t_i <- beta * t_i + (1 - beta) * p_i          (p_i detached, clipped to [1e-4, 1 - 1e-4], renormalised)

and adds lambda * mean_i log(1 - <p_i, t_i>) to the cross-entropy: minimising it pulls p_i toward
t_i, so the early, mostly correct predictions keep outweighing the noisy label. The paper's CIFAR-10
values are beta = 0.7, lambda = 3 (CIFAR-100: 0.9, 7).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.errors import PretrainlabError

PAPER_BETA = 0.7
PAPER_LAMBDA = 3.0
CLIP = 1e-4  # keeps log(1 - <p, t>) finite when a prediction saturates


def elr_regulariser(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_i log(1 - <p_i, t_i>) for probabilities (B, K) and targets (B, K)."""
    return torch.log(1 - (probabilities * targets).sum(dim=1)).mean()


class EarlyLearningRegularization:
    """The ELR loss, a `LossFunction` for `classifier_training.fit` (it needs the example indices).

    Args:
        labels: (N,) int64 noisy training labels, on the training device.
        num_classes: K.
        beta: momentum of the target ensemble.
        strength: lambda, the weight of the regulariser.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int, beta: float = PAPER_BETA,
                 strength: float = PAPER_LAMBDA) -> None:
        if not 0 <= beta < 1 or strength < 0:
            raise PretrainlabError(f"ELR needs 0 <= beta < 1 and lambda >= 0, got beta={beta} lambda={strength}")
        self.labels, self.beta, self.strength = labels, beta, strength
        self.targets = torch.zeros(len(labels), num_classes, device=labels.device)  # (N, K)

    def __call__(self, model: nn.Module, inputs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        logits = model(inputs)  # (B, K)
        probabilities = F.softmax(logits, dim=1).clamp(CLIP, 1 - CLIP)
        with torch.no_grad():
            current = probabilities / probabilities.sum(dim=1, keepdim=True)
            self.targets[indices] = self.beta * self.targets[indices] + (1 - self.beta) * current
        regulariser = elr_regulariser(probabilities, self.targets[indices])
        return F.cross_entropy(logits, self.labels[indices]) + self.strength * regulariser
