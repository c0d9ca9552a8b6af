"""`pretrainlab attack`: the library entry point that ties attacks, defences, records and figures together.

The CLI parses flags into `make_plan` (which validates every name and number before any work) and
`run_plan`; notebooks call them directly. Results go to the run folder's evaluations.jsonl and the store
like any evaluation; figures go to RUN/attack/ (or the --figures folder).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pretrainlab.attack.defences import parse_defence
from pretrainlab.attack.defences.adversarial_training import (
    AdversarialTraining,
    adversarial_finetune,
    export_adversarial_run,
)
from pretrainlab.attack.evaluation import DEFAULT_MAX_TEST, InputSpaceRun, run_input_space, test_images
from pretrainlab.attack.figures import save_rows
from pretrainlab.attack.input_space import ATTACKS, AttackSettings, check_attack, parse_eps
from pretrainlab.attack.model import HEADS, build_subject
from pretrainlab.attack.universal import FeatureModel, UniversalSettings, train_universal
from pretrainlab.attack.universal_heads import (
    build_downstreams,
    universal_figure_rows,
    universal_pixels,
    universal_records,
)
from pretrainlab.data import ImageSource, load_source
from pretrainlab.data.subsets import limit_source
from pretrainlab.errors import PretrainlabError, unknown_name_message
from pretrainlab.eval.features import normalisation
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget, load_target
from pretrainlab.store import DEFAULT_STORE, EvaluationRecorder, ResultsStore

log = logging.getLogger(__name__)

ENCODER_ATTACKS = ("universal",)  # attacks on the encoder itself rather than on one classifier
HEAD_PROTOCOLS = {"linear": "adversarial", "finetune": "adversarial_finetuned", "own": "adversarial_own_head"}


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
    budgets = sorted({parse_eps(text) for text in eps})
    if not budgets:
        raise PretrainlabError("give at least one epsilon, e.g. --eps 8/255")
    parsed = [parse_defence(text) for text in (defences or ["none"])]
    AttackSettings.from_options(options or {})  # bad settings fail here, before any work
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


def attack_undefended(target: EvalTarget, source: ImageSource, plan: AttackPlan, device: torch.device,
                      record: Recording, figures: Path, head: str | None = None) -> None:
    head = head or plan.head
    if not plan.input_attacks:
        return
    subject = build_subject(target, source, device, head, plan.options, plan.seed)
    images, labels, count = test_images(target, source.test, plan.max_test)
    run = input_space_run(plan, HEAD_PROTOCOLS[head], {"split": source.split_note, "defence": "none"})
    record(run_input_space(subject, images, labels, run, source.spec, target.label, figures, plan.show_progress),
           plan.seed)


def listed(value: Any, default: list[str]) -> list[str]:
    if value is None:
        return default
    return [str(item) for item in value] if isinstance(value, list | tuple) else str(value).split(",")


def universal_settings(plan: AttackPlan) -> UniversalSettings:
    """AdvEncoder's settings from options universal_eps (default: the largest --eps), universal_steps, ..."""
    options = plan.options
    eps = parse_eps(str(options["universal_eps"])) if "universal_eps" in options else max(plan.eps)
    values: dict[str, Any] = {"eps": eps}
    for key, kind in (("patch_fraction", float), ("steps", int), ("batch_size", int), ("lr", float),
                      ("alpha", float), ("radius", float)):
        if options.get(f"universal_{key}") is not None:
            values[key] = kind(options[f"universal_{key}"])
    return UniversalSettings(**values)


def attack_universal(target: EvalTarget, source: ImageSource, plan: AttackPlan, device: torch.device,
                     record: Recording, figures: Path) -> None:
    """AdvEncoder from the encoder and unlabeled surrogate images; fooling rates on heads it never saw."""
    from pretrainlab.pipeline import seeded_target

    settings, options = universal_settings(plan), plan.options
    surrogate = load_source(str(options["surrogate"])) if options.get("surrogate") else source
    mean, std = normalisation(target, source.train.images)
    encoder = FeatureModel(target.backbone, mean, std).to(device)
    surrogate_pixels = universal_pixels(target, surrogate, int(options.get("universal_images", 2000)))
    attack = train_universal(encoder, surrogate_pixels, settings, plan.seed, plan.show_progress)
    other = load_source(str(options["other_data"])) if options.get("other_data") else None
    if other is not None:
        other = limit_source(other, plan.max_train)
        other.require_labels("the universal attack's probe on another dataset")
    transfer = (seeded_target(str(options["transfer"]), target.img_size, target.in_chans)
                if options.get("transfer") else None)
    heads = listed(options.get("universal_heads"), ["knn", "linear", "finetune"])
    downstreams = build_downstreams(target, source, device, heads, options, plan.seed, plan.max_test, other, transfer)
    described = {"settings": vars(settings), "surrogate": surrogate.spec, "surrogate_images": len(surrogate_pixels),
                 "split": source.split_note}
    record(universal_records(attack, downstreams, settings.eps, settings.patch_fraction, plan.seed, source.spec,
                             target.label, described), plan.seed)
    save_rows(figures / "universal.png", universal_figure_rows(attack, downstreams[0], settings.eps, plan.seed),
              f"{target.label} | AdvEncoder universal perturbation and patch | head {downstreams[0].name}")


def adversarial_training_config(options: dict[str, Any]) -> AdversarialTraining:
    values = {"method": options.get("adv_method", "pgd"), "eps": parse_eps(str(options.get("adv_eps", "8/255")))}
    for key, kind in (("steps", int), ("beta", float), ("step_factor", float)):
        if options.get(f"adv_{key}") is not None:
            values[key] = kind(options[f"adv_{key}"])
    return AdversarialTraining(**values)


def default_adversarial_out(target: EvalTarget, config: AdversarialTraining, store: Path | None) -> Path:
    name = f"{safe_name(Path(target.label).name if target.run_dir else target.label)}-adv-{config.method}"
    parent = Path(target.run_dir).parent if target.run_dir is not None else Path(store or DEFAULT_STORE).parent
    return parent / name


def defend_by_adversarial_finetuning(target: EvalTarget, source: ImageSource, plan: AttackPlan, device: torch.device,
                                     store: Path | None, report: AttackReport) -> None:
    """Fine-tunes adversarially, exports the run folder, then attacks it with its own head and a linear probe."""
    config = adversarial_training_config(plan.options)
    out = Path(plan.options.get("adv_out") or default_adversarial_out(target, config, store))
    finetune_options = {key: value for key, value in plan.options.items() if not key.startswith("adv_")}
    model, tuning, losses = adversarial_finetune(target, source, device, config, finetune_options, plan.seed,
                                                 plan.show_progress)
    export_adversarial_run(model, tuning, config, losses, out, plan.seed)
    report.exported_runs.append(out)
    log.info("adversarially fine-tuned backbone exported to %s", out)
    defended = load_target(str(out), target.img_size, target.in_chans)
    record = Recording(store, defended, None, report)
    for head in ("own", "linear"):
        attack_undefended(defended, source, plan, device, record, out / "attack", head)


def run_plan(spec: str, data: str, plan: AttackPlan, weights: Path | None = None, device: str = "auto",
             img_size: int | None = None, store: Path | None = DEFAULT_STORE, figures: Path | None = None,
             download: bool = False, source: ImageSource | None = None) -> AttackReport:
    """Attacks a run folder or `timm:NAME` on `data` as `plan` says; records every result (unless store is None)."""
    from pretrainlab.pipeline import resolve_device, seeded_target

    source = source or load_source(data, image_size=img_size, download=download)
    source = limit_source(source, plan.max_train)
    source.require_labels("measuring an attack (robust accuracy, fooling rates)")
    target = seeded_target(spec, img_size or source.image_size[0], source.channels, weights)
    torch_device = resolve_device(device)
    report = AttackReport(figures_dir=figures_folder(target, store, figures))
    record = Recording(store, target, weights, report)
    for kind, _argument in plan.defences:
        if kind == "none":
            attack_undefended(target, source, plan, torch_device, record, report.figures_dir)
            if "universal" in plan.attacks:
                attack_universal(target, source, plan, torch_device, record, report.figures_dir)
        elif kind == "adv_finetune":
            defend_by_adversarial_finetuning(target, source, plan, torch_device, store, report)
    return report
