"""`pretrainlab attack`: the library entry point that ties attacks, defences, records and figures together.

The CLI parses flags into `make_plan` (plan.py: validates every name and number before any work) and
`run_plan`; notebooks call them directly. Results go to the run folder's evaluations.jsonl and the store
like any evaluation; figures go to RUN/attack/ (or the --figures folder).
"""

from __future__ import annotations

from pathlib import Path

from pretrainlab.attack.defended import (
    attack_undefended,
    defend_by_adversarial_finetuning,
    defend_by_fusion,
    defend_by_raw_isp,
)
from pretrainlab.attack.encoder_attacks import attack_feature_space, attack_fooling, attack_universal
from pretrainlab.attack.plan import AttackPlan, AttackReport, Recording, figures_folder, make_plan
from pretrainlab.data import ImageSource, load_source
from pretrainlab.data.subsets import limit_source
from pretrainlab.store import DEFAULT_STORE

__all__ = ["AttackPlan", "AttackReport", "make_plan", "run_plan"]


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
    for kind, argument in plan.defences:
        if kind == "none":
            attack_undefended(target, source, plan, torch_device, record, report.figures_dir)
            if "universal" in plan.attacks:
                attack_universal(target, source, plan, torch_device, record, report.figures_dir)
            if "feature" in plan.attacks:
                attack_feature_space(target, source, plan, torch_device, record, report.figures_dir)
            if "fooling" in plan.attacks:
                attack_fooling(target, source, plan, torch_device, record, report.figures_dir)
        elif kind == "adv_finetune":
            defend_by_adversarial_finetuning(target, source, plan, torch_device, store, report)
        elif kind == "raw_isp":
            defend_by_raw_isp(target, source, plan, torch_device, record, report.figures_dir)
        elif kind == "fusion":
            defend_by_fusion(target, source, plan, torch_device, record, report.figures_dir, str(argument))
    return report
