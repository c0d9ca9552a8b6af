"""Input-space attacks by name, each built from torchattacks (Kim, "Torchattacks: A PyTorch Repository for
Adversarial Attacks", arXiv 2010.01950) rather than re-written.

| name | torchattacks | norms | paper |
| --- | --- | --- | --- |
| fgsm | FGSM | linf | Goodfellow et al., arXiv 1412.6572 |
| pgd | PGD / PGDL2 | linf, l2 | Madry et al., arXiv 1706.06083 |
| eot_pgd | EOTPGD / PGDL2 | linf | PGD with expectation over transformation (Athalye et al., arXiv 1707.07397) |
| apgd, apgd_dlr | APGD (CE / DLR loss) | linf, l2 | Croce and Hein, arXiv 2003.01690 |
| cw | CW (minimum L2 norm) | l2, linf | Carlini and Wagner, arXiv 1608.04644 |
| square | Square (score-based, no gradients) | linf, l2 | Andriushchenko et al., arXiv 1912.00049 |
| autoattack | APGD-CE, APGD-T, FAB-T, Square | linf, l2 | AutoAttack "standard", arXiv 2003.01690 |
| autoattack_rand | APGD-CE, APGD-DLR with EOT 20 | linf, l2 | AutoAttack "rand", for randomised defences |

torchattacks' own `AutoAttack` runs its APGD parts with 10 steps; the ensemble here is assembled from the same
torchattacks classes with the original paper's budgets (100 steps, 9 target classes, 5,000 Square queries),
which `AttackSettings` can lower for a CPU budget. CW minimises the L2 norm of the perturbation rather than
respecting a budget: an adversarial image it finds counts at an epsilon only when its norm fits that epsilon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

import torch
import torch.nn as nn
import torchattacks

from pretrainlab.errors import PretrainlabError, unknown_name_message
from pretrainlab.registry import Registry

NORMS = ("linf", "l2")
TORCHATTACKS_NORM = {"linf": "Linf", "l2": "L2"}


@dataclass(frozen=True)
class AttackSettings:
    """Args:
        steps: iterations of PGD, EOT-PGD, APGD and the AutoAttack parts.
        step_factor: PGD's step is step_factor * eps / steps (Madry et al. use 2.5).
        eot_samples: gradient samples per step of EOT-PGD and autoattack_rand.
        square_queries: queries of Square (alone and inside AutoAttack).
        cw_c, cw_steps, cw_lr: CW's trade-off constant, Adam steps and learning rate.
        restarts: random restarts of APGD.
    """

    steps: int = 10
    step_factor: float = 2.5
    eot_samples: int = 20
    square_queries: int = 1000
    cw_c: float = 1.0
    cw_steps: int = 100
    cw_lr: float = 0.01
    restarts: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "eot_samples", "square_queries", "cw_steps", "restarts"):
            if getattr(self, name) < 1:
                raise PretrainlabError(f"attack setting {name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AttackSettings:
        """Defaults overridden by options named like the fields (steps=20, square_queries=5000, ...)."""
        values = {}
        for item in fields(cls):
            if options.get(item.name) is not None:
                whole = item.type in ("int", int)
                try:
                    number = float(options[item.name])
                    if whole and not number.is_integer():  # int(1.5) would run 1 step silently
                        raise ValueError(number)
                except (TypeError, ValueError):
                    raise PretrainlabError(f"option {item.name} must be {'a whole number' if whole else 'a number'}, "
                                           f"got {options[item.name]!r}") from None
                values[item.name] = int(number) if whole else number
        return cls(**values)

    def alpha(self, eps: float) -> float:
        return self.step_factor * eps / self.steps


# builder(model, eps, norm, settings, num_classes, seed) -> a torchattacks attack
AttackBuilder = Callable[[nn.Module, float, str, AttackSettings, int, int], torchattacks.attack.Attack]
ATTACKS: Registry[AttackBuilder] = Registry("attack")
SUPPORTED_NORMS: dict[str, tuple[str, ...]] = {}
MINIMUM_NORM = {"cw"}  # attacks that return the smallest adversarial perturbation they find, with no budget


def register(name: str, norms: tuple[str, ...] = NORMS) -> Callable[[AttackBuilder], AttackBuilder]:
    def decorate(builder: AttackBuilder) -> AttackBuilder:
        SUPPORTED_NORMS[name] = norms
        return ATTACKS.register(name)(builder)

    return decorate


@register("fgsm", ("linf",))
def build_fgsm(model: nn.Module, eps: float, norm: str, settings: AttackSettings, num_classes: int, seed: int):
    return torchattacks.FGSM(model, eps=eps)


@register("pgd")
def build_pgd(model: nn.Module, eps: float, norm: str, settings: AttackSettings, num_classes: int, seed: int):
    if norm == "l2":
        return torchattacks.PGDL2(model, eps=eps, alpha=settings.alpha(eps), steps=settings.steps)
    return torchattacks.PGD(model, eps=eps, alpha=settings.alpha(eps), steps=settings.steps)


@register("eot_pgd", ("linf",))
def build_eot_pgd(model: nn.Module, eps: float, norm: str, settings: AttackSettings, num_classes: int, seed: int):
    return torchattacks.EOTPGD(model, eps=eps, alpha=settings.alpha(eps), steps=settings.steps,
                               eot_iter=settings.eot_samples)


def _apgd(model: nn.Module, eps: float, norm: str, settings: AttackSettings, seed: int, loss: str, eot: int = 1):
    return torchattacks.APGD(model, norm=TORCHATTACKS_NORM[norm], eps=eps, steps=settings.steps,
                             n_restarts=settings.restarts, seed=seed, loss=loss, eot_iter=eot)


@register("apgd")
def build_apgd(model: nn.Module, eps: float, norm: str, settings: AttackSettings, num_classes: int, seed: int):
    return _apgd(model, eps, norm, settings, seed, "ce")


@register("apgd_dlr")
def build_apgd_dlr(model: nn.Module, eps: float, norm: str, settings: AttackSettings, num_classes: int, seed: int):
    return _apgd(model, eps, norm, settings, seed, "dlr")


@register("cw")
def build_cw(model: nn.Module, eps: float, norm: str, settings: AttackSettings, num_classes: int, seed: int):
    return torchattacks.CW(model, c=settings.cw_c, steps=settings.cw_steps, lr=settings.cw_lr)


@register("square")
def build_square(model: nn.Module, eps: float, norm: str, settings: AttackSettings, num_classes: int, seed: int):
    return torchattacks.Square(model, norm=TORCHATTACKS_NORM[norm], eps=eps, n_queries=settings.square_queries,
                               seed=seed)


@register("autoattack")
def build_autoattack(model: nn.Module, eps: float, norm: str, settings: AttackSettings, num_classes: int, seed: int):
    norm_name = TORCHATTACKS_NORM[norm]
    return torchattacks.MultiAttack([
        _apgd(model, eps, norm, settings, seed, "ce"),
        torchattacks.APGDT(model, norm=norm_name, eps=eps, steps=settings.steps, seed=seed, n_classes=num_classes),
        torchattacks.FAB(model, norm=norm_name, eps=eps, steps=settings.steps, seed=seed, multi_targeted=True,
                         n_classes=num_classes),
        torchattacks.Square(model, norm=norm_name, eps=eps, n_queries=settings.square_queries, seed=seed),
    ])


@register("autoattack_rand")
def build_autoattack_rand(model: nn.Module, eps: float, norm: str, settings: AttackSettings, num_classes: int,
                          seed: int):
    return torchattacks.MultiAttack([_apgd(model, eps, norm, settings, seed, "ce", settings.eot_samples),
                                     _apgd(model, eps, norm, settings, seed, "dlr", settings.eot_samples)])


def check_attack(name: str, norm: str) -> None:
    """Raises PretrainlabError for an unknown attack or norm, or a norm the attack does not support."""
    ATTACKS.get(name)
    if norm not in NORMS:
        raise PretrainlabError(unknown_name_message("norm", norm, NORMS))
    if norm not in SUPPORTED_NORMS[name]:
        raise PretrainlabError(f"attack '{name}' supports only {', '.join(SUPPORTED_NORMS[name])}, not {norm}")


def parse_eps(text: str, norm: str = "linf") -> float:
    """'8/255', '0.03' or '0' -> a float: in [0, 1] for L-inf (pixel units of [0, 1]); any finite value >= 0 for L2,
    whose norm over a whole image can exceed 1 (an L-inf 8/255 change of all 784 pixels of a digit has L2 0.88,
    and MNIST's customary L2 budgets are 1.5-2). Anything else raises PretrainlabError."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise PretrainlabError(f"epsilon '{text}' is not a number or a fraction such as 8/255") from None
    if norm == "l2" and not 0.0 <= value < float("inf"):
        raise PretrainlabError(f"epsilon {text} is negative: an L2 budget is a norm >= 0 in pixel units of [0, 1]")
    if norm != "l2" and not 0.0 <= value <= 1.0:
        raise PretrainlabError(f"epsilon {text} is outside [0, 1]: epsilons are in pixel units of [0, 1]")
    return value


def eps_label(eps: float, norm: str = "linf") -> str:
    """L-inf: 8/255 -> '8/255' when eps is a whole number of grey levels, else the plain number ('0.5').
    L2: always the plain number (an L2 norm of 1.0 is not 255 grey levels of anything)."""
    levels = eps * 255
    if norm != "l2" and eps > 0 and abs(levels - round(levels)) < 1e-6:
        return f"{round(levels)}/255"
    return f"{eps:g}"


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """(B, C, H, W) -> (B,) L-inf or L2 norm of each image's perturbation."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def enforce_budget(clean: torch.Tensor, adversarial: torch.Tensor, eps: float, norm: str,
                   tolerance: float = 1e-4) -> torch.Tensor:
    """Adversarial images projected onto the eps-ball around `clean` and into [0, 1].

    Float rounding in a library can overshoot by ~1e-7; an overshoot beyond `tolerance` means the attack broke its
    budget, which is a bug, so it raises instead of silently projecting.
    """
    delta = adversarial - clean
    excess = float((perturbation_norm(delta, norm) - eps).max()) if len(delta) else 0.0
    if excess > tolerance:
        raise RuntimeError(f"an attack exceeded its {norm} budget {eps:.6g} by {excess:.3g}")
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (eps / perturbation_norm(delta, "l2").clamp(min=1e-12)).clamp(max=1.0)
        delta = delta * scale.view(-1, 1, 1, 1)
    return (clean + delta).clamp(0.0, 1.0)
