"""Input-space attacks on the undefended model and on each defence, every defence row naming its attack."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pretrainlab.attack.defences.adversarial_training import (
    AdversarialTraining,
    adversarial_finetune,
    export_adversarial_run,
)
from pretrainlab.attack.evaluation import run_input_space, test_images
from pretrainlab.attack.input_space import parse_eps
from pretrainlab.attack.model import build_subject
from pretrainlab.attack.plan import AttackPlan, AttackReport, Recording, input_space_run, safe_name
from pretrainlab.data import ImageSource
from pretrainlab.eval.target import EvalTarget, load_target
from pretrainlab.store import DEFAULT_STORE

log = logging.getLogger(__name__)

HEAD_PROTOCOLS = {"linear": "adversarial", "finetune": "adversarial_finetuned", "own": "adversarial_own_head"}


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
