"""Fooling images: unrecognisable images a classifier assigns to a class with >= 99 % confidence.

Nguyen, Yosinski, Clune, "Deep Neural Networks are Easily Fooled: High Confidence Predictions for
Unrecognizable Images", arXiv 1412.1897. Three searches, each for one image per class of the attacked
head (backbone + probe, pixels in [0, 1]):
- gradient ascent from uniform noise on the class's log-probability (signed steps, pixels kept in [0, 1];
  the paper's section 3.4);
- evolution with a direct encoding (each pixel a gene, a uniform random start, a share of the pixels mutated
  by Gaussian noise each generation);
- evolution with a CPPN encoding (cppn.py), which draws regular patterns.
Both evolutions are MAP-Elites as in the paper: an archive keeps the best image found so far for every class,
parents are drawn from the archive, and a child replaces the elite of any class it scores higher on. A
whole generation is rendered and scored in one batch on the device; a search stops early once every class
has reached the threshold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm import tqdm

from pretrainlab.attack.cppn import CPPN
from pretrainlab.errors import PretrainlabError

METHODS = ("gradient", "direct", "cppn")


@dataclass(frozen=True)
class FoolingSettings:
    """Args:
        threshold: confidence a class must reach (the paper's 99 %).
        gradient_steps, gradient_step, gradient_restarts: signed gradient ascent on the pixels.
        generations, population: of each evolution; mutation_rate: share of genes mutated per child;
        pixel_noise, weight_noise: standard deviation of a mutation (direct pixels, CPPN weights).
    """

    threshold: float = 0.99
    gradient_steps: int = 200
    gradient_step: float = 0.05
    gradient_restarts: int = 4
    generations: int = 300
    population: int = 128
    mutation_rate: float = 0.1
    pixel_noise: float = 0.3
    weight_noise: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1 or self.population < 1 or self.generations < 1 or self.gradient_steps < 1:
            raise PretrainlabError(f"fooling images need 0 < threshold < 1 and positive steps/generations/population, "
                                   f"got {self}")


@dataclass
class FoolingResult:
    """Args:
        method: "gradient", "direct" or "cppn".
        images: (K, C, S, S) the best image found for each class, in [0, 1].
        confidences: (K,) the classifier's probability of that class on it.
        seconds: wall time; evaluations: images scored.
    """

    method: str
    images: torch.Tensor
    confidences: torch.Tensor
    seconds: float
    evaluations: int


@torch.no_grad()
def log_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(B, C, S, S) -> log-softmax (B, K), in eval mode. Evolution selects on these: a class far from winning has
    a probability that underflows to 0 for every child, which leaves selection nothing to climb."""
    return torch.cat([model(images[start : start + batch_size]).float().log_softmax(1)
                      for start in range(0, len(images), batch_size)])


def probabilities(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) -> softmax probabilities (B, K)."""
    return log_probabilities(model, images).exp()


def noise_levels(count: int, levels: int = 4) -> torch.Tensor:
    """(count, 1, 1, 1) brightness scales 1, 1/2, 1/4, 1/8, ... cycling: uniform noise U(0, scale) starts."""
    return torch.tensor([0.5 ** (index % levels) for index in range(count)]).view(-1, 1, 1, 1)


def gradient_ascent(model: nn.Module, num_classes: int, shape: tuple[int, int, int], settings: FoolingSettings,
                    generator: torch.Generator, show_progress: bool = False) -> FoolingResult:
    """One image per class by signed gradient ascent on log p(class | x) from uniform noise, kept in [0, 1].

    `gradient_restarts` starts per class, from noise of decreasing brightness (uniform in [0, 1], [0, 1/2], ...):
    a local ascent from bright noise cannot reach a class whose images are mostly dark (measured: a tiny digit
    classifier gives the black image 60 % "1" but ascent from U(0, 1) noise stalls at 5 %). The step decays
    linearly from `gradient_step` to a tenth of it.
    """
    started = time.perf_counter()
    device = next(model.parameters()).device
    restarts = settings.gradient_restarts
    levels = noise_levels(restarts, restarts).repeat_interleave(num_classes, dim=0)  # (R * K, 1, 1, 1)
    images = (torch.rand(restarts * num_classes, *shape, generator=generator) * levels).to(device)
    classes = torch.arange(num_classes, device=device).repeat(restarts)  # (R * K,): restart r, class k
    model.eval().requires_grad_(False)
    steps = 0
    try:
        for step in tqdm(range(settings.gradient_steps), desc="fooling: gradient ascent", disable=not show_progress,
                         leave=False):
            images.requires_grad_(True)
            log_probabilities = model(images).log_softmax(1).gather(1, classes.view(-1, 1)).squeeze(1)
            gradient, = torch.autograd.grad(log_probabilities.sum(), images)
            size = settings.gradient_step * (1 - 0.9 * step / settings.gradient_steps)
            images = (images.detach() + size * gradient.sign()).clamp(0.0, 1.0)
            steps += 1
            best = log_probabilities.detach().view(restarts, num_classes).amax(0)
            if bool((best.exp() >= settings.threshold).all()):
                break
    finally:
        model.requires_grad_(True)
    scores = probabilities(model, images).gather(1, classes.view(-1, 1)).view(restarts, num_classes)
    confidences, restart = scores.max(0)  # the best restart of each class
    chosen = images.view(restarts, num_classes, *shape)[restart, torch.arange(num_classes, device=device)]
    return FoolingResult("gradient", chosen.cpu(), confidences.cpu(), time.perf_counter() - started,
                         steps * restarts * num_classes)


def map_elites(model: nn.Module, num_classes: int, method: str, initial: torch.Tensor,
               render: Callable[[torch.Tensor], torch.Tensor], mutate: Callable[[torch.Tensor], torch.Tensor],
               settings: FoolingSettings, generator: torch.Generator, show_progress: bool = False) -> FoolingResult:
    """MAP-Elites over genomes (N, G): the archive holds the best genome per class of the attacked head; parents
    are drawn with `generator` (CPU)."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    initial = initial.to(device)
    scores = log_probabilities(model, render(initial))  # (N, K)
    elite_scores, best = scores.max(0)  # (K,)
    threshold = math.log(settings.threshold)
    elites = initial[best].clone()  # (K, G)
    evaluations = len(initial)
    for _ in tqdm(range(settings.generations), desc=f"fooling: {method} evolution", disable=not show_progress,
                  leave=False):
        if bool((elite_scores >= threshold).all()):
            break
        parents = elites[torch.randint(0, num_classes, (settings.population,), generator=generator).to(device)]
        children = mutate(parents)
        scores = log_probabilities(model, render(children))  # (P, K)
        evaluations += len(children)
        child_scores, child = scores.max(0)
        better = child_scores > elite_scores
        elites[better] = children[child[better]]
        elite_scores = torch.where(better, child_scores, elite_scores)
    images = render(elites)
    return FoolingResult(method, images.cpu(), probabilities(model, images).diagonal().cpu(),
                         time.perf_counter() - started, evaluations)


def evolve_direct(model: nn.Module, num_classes: int, shape: tuple[int, int, int], settings: FoolingSettings,
                  generator: torch.Generator, show_progress: bool = False) -> FoolingResult:
    """Direct encoding: the genome is the image; a mutation adds N(0, pixel_noise^2) to a share of its pixels.

    The first population is uniform noise of four brightness levels (see `noise_levels`): a tiny digit classifier
    calls U(0, 1) noise "8" with log-probability gaps of 20-70 to every other class, which a direct encoding
    climbs out of only slowly (measured: -20 to -14 in 100 generations).
    """
    device = next(model.parameters()).device
    mutation_generator = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**31, (1,),
                                                                                      generator=generator)))

    def mutate(parents: torch.Tensor) -> torch.Tensor:
        chosen = torch.rand(parents.shape, generator=mutation_generator, device=device) < settings.mutation_rate
        noise = torch.randn(parents.shape, generator=mutation_generator, device=device) * settings.pixel_noise
        return (parents + chosen * noise).clamp(0.0, 1.0)

    initial = torch.rand(settings.population, *shape, generator=generator) * noise_levels(settings.population)
    initial = initial.flatten(1)
    return map_elites(model, num_classes, "direct", initial, lambda genomes: genomes.view(-1, *shape), mutate,
                      settings, generator, show_progress)


def evolve_cppn(model: nn.Module, num_classes: int, shape: tuple[int, int, int], settings: FoolingSettings,
                generator: torch.Generator, show_progress: bool = False) -> FoolingResult:
    """CPPN encoding: the genome is the CPPN's weights; a mutation adds N(0, weight_noise^2) to a share of them."""
    device = next(model.parameters()).device
    channels, size, _ = shape
    network = CPPN(size, channels)
    mutation_generator = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**31, (1,),
                                                                                      generator=generator)))

    def mutate(parents: torch.Tensor) -> torch.Tensor:
        chosen = torch.rand(parents.shape, generator=mutation_generator, device=device) < settings.mutation_rate
        return parents + chosen * torch.randn(parents.shape, generator=mutation_generator,
                                              device=device) * settings.weight_noise

    return map_elites(model, num_classes, "cppn", network.random(settings.population, generator), network.render,
                      mutate, settings, generator, show_progress)


SEARCHES = {"gradient": gradient_ascent, "direct": evolve_direct, "cppn": evolve_cppn}


def fooling_images(model: nn.Module, num_classes: int, shape: tuple[int, int, int], methods: list[str],
                   settings: FoolingSettings, seed: int = 0, show_progress: bool = False) -> list[FoolingResult]:
    """Runs each search in `methods` (gradient, direct, cppn) for one image per class; pixels (C, S, S) = shape."""
    results = []
    for method in methods:
        if method not in SEARCHES:
            raise PretrainlabError(f"unknown fooling search '{method}'; valid: {', '.join(METHODS)}")
        generator = torch.Generator().manual_seed(seed)
        results.append(SEARCHES[method](model, num_classes, shape, settings, generator, show_progress))
    return results
