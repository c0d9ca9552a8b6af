"""A validated `pretrainlab attack` request, and where its results and figures go.

`make_plan` checks every attack, norm, epsilon, defence and head name before any work starts, so bad input
stops with one line; `Recording` writes results like any evaluation (run folder's evaluations.jsonl, then
the store).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrainlab.attack.defences import parse_defence
from pretrainlab.attack.evaluation import DEFAULT_MAX_TEST, InputSpaceRun
from pretrainlab.attack.fooling import METHODS as FOOLING_METHODS
from pretrainlab.attack.input_space import ATTACKS, AttackSettings, check_attack, parse_eps
from pretrainlab.attack.model import HEADS
from pretrainlab.attack.options import check_attack_options
from pretrainlab.errors import PretrainlabError, unknown_name_message
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget
from pretrainlab.store import DEFAULT_STORE, EvaluationRecorder, ResultsStore

ENCODER_ATTACKS = ("universal", "feature", "fooling")  # attacks on the encoder itself rather than on one classifier


@dataclass
class AttackPlan:
    """A validated `pretrainlab attack` request.

    Args:
        attacks: input-space attack names (pretrainlab.attack.input_space) and encoder attacks.
        eps: budgets in [0, 1] pixel units.
        defences: (kind, argument) pairs, e.g. ("none", None), ("fusion", "runs/other").
        head: "linear", "finetune" or "own" (the head an adversarially fine-tuned run saved).
        max_test: attack a fixed class-balanced subset of the test split of about this many images.
        options: attack settings (steps, square_queries, ...), fine-tuning and defence options.
    """

    attacks: list[str]
    eps: list[float]
    norm: str = "linf"
    defences: list[tuple[str, str | None]] = field(default_factory=lambda: [("none", None)])
    head: str = "linear"
    seed: int = 0
    max_train: int | None = None
    max_test: int | None = DEFAULT_MAX_TEST
    options: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True

    @property
    def input_attacks(self) -> list[str]:
        return [name for name in self.attacks if name not in ENCODER_ATTACKS]


def check_listed(options: dict[str, Any], key: str, valid: tuple[str, ...]) -> None:
    for name in listed(options.get(key), []):
        if name not in valid:
            raise PretrainlabError(unknown_name_message(key.rstrip("s").replace("_", " "), name, valid))


def make_plan(attacks: list[str], eps: list[str], norm: str = "linf", defences: list[str] | None = None,
              head: str = "linear", seed: int = 0, max_train: int | None = None,
              max_test: int | None = DEFAULT_MAX_TEST, options: dict[str, Any] | None = None,
              show_progress: bool = True) -> AttackPlan:
    """Checks every name and number (PretrainlabError on the first bad one) and returns the plan."""
    if not attacks:
        raise PretrainlabError(f"name at least one attack: {', '.join(ATTACKS.names() + list(ENCODER_ATTACKS))}")
    for name in attacks:
        if name not in ENCODER_ATTACKS:
            if name not in ATTACKS:
                raise PretrainlabError(unknown_name_message("attack", name, ATTACKS.names() + list(ENCODER_ATTACKS)))
            check_attack(name, norm)
    if head not in HEADS:
        raise PretrainlabError(unknown_name_message("head", head, HEADS))
    budgets = sorted({parse_eps(text, norm) for text in eps})
    if not budgets:
        raise PretrainlabError("give at least one epsilon, e.g. --eps 8/255")
    parsed = [parse_defence(text) for text in (defences or ["none"])]
    if head != "linear" and any(kind == "fusion" for kind, _ in parsed):
        raise PretrainlabError(f"defence fusion fits one linear probe on the fused features; drop --head {head}")
    check_attack_options(options or {}, budgets, universal="universal" in attacks)  # bad values fail before any work
    check_listed(options or {}, "universal_heads", ("knn", "linear", "finetune"))
    check_listed(options or {}, "fooling_methods", FOOLING_METHODS)
    if max_test is not None and max_test < 1:
        raise PretrainlabError(f"--max-test must be at least 1, got {max_test}")
    return AttackPlan(list(dict.fromkeys(attacks)), budgets, norm, parsed, head, seed, max_train, max_test,
                      dict(options or {}), show_progress)


@dataclass
class AttackReport:
    results: list[EvalResult] = field(default_factory=list)
    figures_dir: Path | None = None
    exported_runs: list[Path] = field(default_factory=list)


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "backbone"


def figures_folder(target: EvalTarget, store: Path | None, given: Path | None) -> Path:
    """RUN/attack/ for a run folder, else attack/LABEL/ beside the store."""
    if given is not None:
        return Path(given)
    if target.run_dir is not None:
        return Path(target.run_dir) / "attack"
    return Path(store or DEFAULT_STORE).parent / "attack" / safe_name(target.label)


class Recording:
    """Records results of one target into the store (when there is one) and keeps them for the report."""

    def __init__(self, store: Path | None, target: EvalTarget, weights: Path | None, report: AttackReport) -> None:
        from pretrainlab.pipeline import weights_fingerprint

        self.report = report
        self.recorder = None if store is None else EvaluationRecorder(
            ResultsStore(store), target.label, weights_fingerprint(target, weights), target.run_dir)

    def __call__(self, results: list[EvalResult], seed: int) -> None:
        if self.recorder is not None and results:
            self.recorder(results, seed, sum(result.seconds for result in results))
        self.report.results.extend(results)


def input_space_run(plan: AttackPlan, protocol: str, extra: dict[str, Any] | None = None,
                    prefix: str = "", attacks: list[str] | None = None) -> InputSpaceRun:
    return InputSpaceRun(attacks or plan.input_attacks, plan.eps, plan.norm, protocol, prefix,
                         AttackSettings.from_options(plan.options), plan.seed, extra=dict(extra or {}))



def listed(value: Any, default: list[str]) -> list[str]:
    if value is None:
        return default
    return [str(item) for item in value] if isinstance(value, list | tuple) else str(value).split(",")
