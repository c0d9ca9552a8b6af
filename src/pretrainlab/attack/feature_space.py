"""Feature-space targeted attack: push an image's hidden features at one layer towards a target image's.

Aafaq, Akhtar, Liu, Shah, Mian, "Controlled Caption Generation for Images Through Adversarial Attacks",
arXiv 2107.03050: a caption decoder reads an encoder's features, so whoever moves those features controls the
output without knowing the decoder. Here the same idea is measured on any backbone: L-inf PGD (sign steps,
projection onto the eps-ball and [0, 1]) minimises the cosine distance between the features of the attacked
image and those of a target image of another class at a chosen layer (`feature_maps` index or the pooled
embedding). The cosine rather than the squared distance, because the cosine is what is reported and it ignores
the features' norm (on a random tinycnn's last map at 8/255, 10 steps raised the cosine to the target by
0.017 with it, 0.010 with the squared distance). Reported: the cosine between attacked and target features at
every layer (before and after), and how often a downstream probe that the attack never used then predicts the
target image's class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pretrainlab.attack.input_space import eps_label
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.record import EvalResult

POOLED = "pooled"


class LayerFeatures(nn.Module):
    """Pixels (B, C, S, S) in [0, 1] -> {layer name: (B, ...)}: every feature map ("layer0", ...) and "pooled"."""

    def __init__(self, backbone: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (pixels - self.mean) / self.std
        layers = {f"layer{index}": maps for index, maps in enumerate(self.backbone.feature_maps(x))}
        layers[POOLED] = self.backbone.pooled(x)
        return layers

    def layer_names(self, pixels: torch.Tensor) -> list[str]:
        with torch.no_grad():
            return list(self(pixels[:1]))


def resolve_layer(name: str, available: list[str]) -> str:
    """'pooled', 'layer2' or an index ('-1' = the deepest feature map) -> a layer name."""
    maps = [layer for layer in available if layer != POOLED]
    if name in available:
        return name
    try:
        return maps[int(name)]
    except (ValueError, IndexError):
        raise PretrainlabError(f"unknown feature layer '{name}'; valid: {', '.join(available)} or an index into "
                               f"the {len(maps)} feature maps (-1 = deepest)") from None


def cosines(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{layer: (B,) cosine between the flattened features of each pair}."""
    return {name: F.cosine_similarity(first[name].flatten(1), second[name].flatten(1), dim=1) for name in first}


@dataclass
class FeatureAttackOutcome:
    """Args:
        adversarial: (B, C, S, S) the attacked images.
        before, after: {layer: (B,)} cosine to the target's features before and after the attack.
    """

    adversarial: torch.Tensor
    before: dict[str, torch.Tensor] = field(default_factory=dict)
    after: dict[str, torch.Tensor] = field(default_factory=dict)


def feature_attack(encoder: LayerFeatures, sources: torch.Tensor, targets: torch.Tensor, layer: str, eps: float,
                   steps: int = 20, step_factor: float = 2.5, batch_size: int = 128,
                   show_progress: bool = False) -> FeatureAttackOutcome:
    """Attacks `sources` (B, C, S, S) towards `targets` (B, C, S, S) at `layer` within L-inf `eps`."""
    device = encoder.mean.device
    alpha = step_factor * eps / steps
    encoder.eval().requires_grad_(False)
    outcome = FeatureAttackOutcome(torch.empty_like(sources))
    before: dict[str, list[torch.Tensor]] = {}
    after: dict[str, list[torch.Tensor]] = {}
    starts = range(0, len(sources), batch_size)
    try:
        for start in tqdm(starts, desc=f"feature attack {layer}", disable=not show_progress, leave=False):
            clean = sources[start : start + batch_size].to(device)
            with torch.no_grad():
                goal = encoder(targets[start : start + batch_size].to(device))
            adversarial = clean.clone()
            for _ in range(steps):
                adversarial.requires_grad_(True)
                attacked = encoder(adversarial)[layer].flatten(1)
                distance = (1 - F.cosine_similarity(attacked, goal[layer].flatten(1), dim=1)).sum()
                gradient, = torch.autograd.grad(distance, adversarial)
                adversarial = adversarial.detach() - alpha * gradient.sign()
                adversarial = (clean + (adversarial - clean).clamp(-eps, eps)).clamp(0.0, 1.0)
            outcome.adversarial[start : start + len(clean)] = adversarial.cpu()
            with torch.no_grad():
                for name, values in cosines(encoder(clean), goal).items():
                    before.setdefault(name, []).append(values.cpu())
                for name, values in cosines(encoder(adversarial), goal).items():
                    after.setdefault(name, []).append(values.cpu())
    finally:
        encoder.requires_grad_(True)
    outcome.before = {name: torch.cat(parts) for name, parts in before.items()}
    outcome.after = {name: torch.cat(parts) for name, parts in after.items()}
    return outcome


def target_pairs(labels: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sources, targets) indices (count,): each target is a random image of another class than its source."""
    generator = torch.Generator().manual_seed(seed)
    sources = torch.randperm(len(labels), generator=generator)[:count]
    targets = torch.empty_like(sources)
    for position, index in enumerate(sources):
        others = torch.nonzero(labels != labels[index]).flatten()
        if len(others) == 0:
            raise PretrainlabError("the feature-space attack needs test images of at least two classes")
        targets[position] = others[torch.randint(0, len(others), (1,), generator=generator)]
    return sources, targets


def feature_records(outcome: FeatureAttackOutcome, hits: torch.Tensor, layer: str, eps: float, seconds: float,
                    data: str, backbone: str, settings: dict) -> list[EvalResult]:
    """`target_class@EPS:LAYER` (percent of attacked images the probe assigns to the target's class) and
    `cosine@EPS:L` for every layer L (mean cosine to the target's features after the attack); for the backbone,
    lower is better."""
    label = eps_label(eps)
    common = {**settings, "eps": eps, "attacked_layer": layer, "pairs": len(hits)}
    records = [EvalResult("feature_attack", data, f"target_class@{label}:{layer}", float(hits.float().mean()) * 100,
                          seconds, higher_is_better=False, backbone=backbone, settings=common)]
    for name, values in outcome.after.items():
        records.append(EvalResult("feature_attack", data, f"cosine@{label}:{name}", float(values.mean()), seconds,
                                  higher_is_better=False, backbone=backbone,
                                  settings={**common, "cosine_before": float(outcome.before[name].mean())}))
    return records
