"""Robust accuracy per epsilon: one input-space attack at each budget, on a fixed set of test images.

An image counts as robust at eps when it is classified correctly clean and under the attack at every
budget up to eps: an adversarial image found within a smaller budget is also within the larger one, so
robust accuracy never increases with eps (the AutoAttack convention of keeping the worst case found).
Each budget's attack starts from the same seed, in the same batches, so a run repeats exactly and matches
the library called directly on the same images and seed (the first budget attacks every image; later budgets
attack only the images still robust).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm import tqdm

from pretrainlab.attack.input_space import (
    ATTACKS,
    MINIMUM_NORM,
    AttackSettings,
    check_attack,
    enforce_budget,
    perturbation_norm,
)
from pretrainlab.attack.model import predict


@dataclass
class EpsilonResult:
    """Args:
        eps: the budget in pixel units.
        robust_accuracy: percent of images robust at every budget up to this one.
        seconds: wall time of this budget's attack and prediction.
        max_norm: the largest perturbation norm among the kept adversarial images.
    """

    eps: float
    robust_accuracy: float
    seconds: float
    max_norm: float


@dataclass
class RobustnessOutcome:
    """Args:
        attack, norm: what ran.
        clean_accuracy: percent correct on the clean images.
        per_eps: one entry per budget, ascending.
        examples: eps -> (K, C, S, S) the worst-case adversarial images of the first K images, for figures.
        clean_examples: (K, C, S, S) those images clean.
    """

    attack: str
    norm: str
    clean_accuracy: float
    per_eps: list[EpsilonResult] = field(default_factory=list)
    examples: dict[float, torch.Tensor] = field(default_factory=dict)
    clean_examples: torch.Tensor | None = None


def attack_batches(model: nn.Module, attack_name: str, images: torch.Tensor, labels: torch.Tensor, eps: float,
                   norm: str, settings: AttackSettings, num_classes: int, seed: int, batch_size: int,
                   progress: tqdm | None = None) -> torch.Tensor:
    """Adversarial images (N, C, S, S) in [0, 1]; the global generator is seeded with `seed` before the first
    batch and restored after, because some torchattacks classes reseed it themselves."""
    device = next(model.parameters()).device
    attack = ATTACKS.get(attack_name)(model, eps, norm, settings, num_classes, seed)
    outputs = []
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(images), batch_size):
            clean = images[start : start + batch_size].to(device)
            adversarial = attack(clean, labels[start : start + batch_size].to(device)).detach()
            if attack_name not in MINIMUM_NORM:
                adversarial = enforce_budget(clean, adversarial, eps, norm)
            outputs.append(adversarial.cpu())
            if progress is not None:
                progress.update(len(clean))
    return torch.cat(outputs)


def within_budget(clean: torch.Tensor, adversarial: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """A minimum-norm attack's images whose perturbation exceeds eps are replaced by the clean image."""
    fits = perturbation_norm(adversarial - clean, norm) <= eps + 1e-7
    return torch.where(fits.view(-1, 1, 1, 1), adversarial, clean)


def robust_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack_name: str,
                    eps_values: list[float], norm: str = "linf", settings: AttackSettings | None = None,
                    num_classes: int | None = None, seed: int = 0, batch_size: int = 256, keep: int = 10,
                    show_progress: bool = False) -> RobustnessOutcome:
    """Attacks `images` (N, C, S, S) in [0, 1] with true `labels` (N,) at each eps (sorted ascending).

    Args:
        model: pixels -> logits (an `AttackedModel`), in eval mode.
        keep: how many images' adversarial versions to keep for figures.
    """
    check_attack(attack_name, norm)
    settings = settings or AttackSettings()
    labels = labels.long()
    clean_predictions = predict(model, images, batch_size)
    num_classes = num_classes or int(max(labels.max(), clean_predictions.max())) + 1
    robust = clean_predictions == labels  # (N,) robust at every budget so far
    first_break = images[:keep].clone()  # the adversarial image that broke each kept image first
    broken_kept = ~robust[:keep]
    outcome = RobustnessOutcome(attack_name, norm, float(robust.float().mean()) * 100, clean_examples=images[:keep])
    minimum_norm_images = None
    eps_values = sorted(eps_values)
    with tqdm(total=len(images) * len(eps_values), desc=f"{attack_name} {norm}", unit="img",
              disable=not show_progress, leave=False) as progress:
        for index, eps in enumerate(eps_values):
            started = time.perf_counter()
            if attack_name in MINIMUM_NORM:  # one run finds the smallest perturbations; each eps keeps those that fit
                if minimum_norm_images is None:
                    minimum_norm_images = attack_batches(model, attack_name, images, labels, eps, norm, settings,
                                                         num_classes, seed, batch_size)
                adversarial = within_budget(images, minimum_norm_images, eps, norm)
                progress.update(len(images))
            else:
                # The first budget attacks every image (as the library called directly would); later ones only the
                # images still robust, since a broken image stays broken at every larger budget.
                attacked = torch.arange(len(images)) if index == 0 else torch.nonzero(robust).flatten()
                adversarial = images.clone()
                if len(attacked):
                    adversarial[attacked] = attack_batches(model, attack_name, images[attacked], labels[attacked],
                                                           eps, norm, settings, num_classes, seed, batch_size,
                                                           progress)
                progress.update(len(images) - len(attacked))
            correct = predict(model, adversarial, batch_size) == labels
            newly_broken = robust[:keep] & ~correct[:keep]
            first_break[newly_broken] = adversarial[:keep][newly_broken]
            broken_kept |= newly_broken
            robust &= correct
            # The figure shows the image that broke the model, or this budget's attempt when none did.
            outcome.examples[eps] = torch.where(broken_kept.view(-1, 1, 1, 1), first_break, adversarial[:keep])
            outcome.per_eps.append(EpsilonResult(eps, float(robust.float().mean()) * 100, time.perf_counter() - started,
                                                 float(perturbation_norm(adversarial - images, norm).max())))
    return outcome
