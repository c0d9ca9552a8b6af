"""Input-space attacks on the undefended model and on each defence, every defence row naming its attack."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pretrainlab.attack.defences.adversarial_training import (
    AdversarialTraining,
    adversarial_finetune,
    export_adversarial_run,
)
from pretrainlab.attack.defences.fusion import fusion_subject
from pretrainlab.attack.defences.raw_isp import IspTraining, RawCapture, RawDefence, SensorModel, psnr, train_isp
from pretrainlab.attack.evaluation import run_input_space, test_images
from pretrainlab.attack.figures import ImageRow, save_rows
from pretrainlab.attack.model import AttackedModel, AttackSubject, build_subject, pixels
from pretrainlab.attack.options import adversarial_training_config, typed
from pretrainlab.attack.plan import AttackPlan, AttackReport, Recording, input_space_run, safe_name
from pretrainlab.data import ImageSource
from pretrainlab.eval.record import EvalResult
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


ADAPTIVE = {"pgd": "eot_pgd", "apgd": "autoattack_rand", "apgd_dlr": "autoattack_rand", "autoattack": "autoattack_rand"}


def adaptive_attacks(attacks: list[str], norm: str) -> list[str]:
    """The attacks that know a randomised defence: gradient attacks average over its randomness (EOT); fgsm, cw and
    the score-based square keep their own (each still sees gradients through the quantiser by BPDA)."""
    chosen = [ADAPTIVE.get(name, name) for name in attacks]
    if norm != "linf":
        chosen = ["autoattack_rand" if name == "eot_pgd" else name for name in chosen]  # EOTPGD is L-inf only
    return list(dict.fromkeys(chosen))


def defend_by_raw_isp(target: EvalTarget, source: ImageSource, plan: AttackPlan, device: torch.device,
                      record: Recording, figures: Path) -> None:
    """Trains the ISP on clean training images, puts RAW capture + ISP in front of the model, attacks adaptively."""
    options = plan.options
    sensor = SensorModel(typed(options, "raw_shot", 0.002), typed(options, "raw_read", 0.0001))
    subject = build_subject(target, source, device, plan.head, options, plan.seed)
    capture = RawCapture(sensor, "bpda").to(device)
    isp = train_isp(source.train.images, lambda images: pixels(target, images), target.in_chans, capture,
                    IspTraining(steps=typed(options, "raw_isp_steps", 600)), device, plan.seed, plan.show_progress)
    images, labels, _ = test_images(target, source.test, plan.max_test)
    with torch.no_grad():
        round_trip = torch.cat([isp(capture(images[start : start + 256].to(device))).cpu()
                                for start in range(0, len(images), 256)])
    protocol = f"defended_raw_isp{'' if plan.head == 'linear' else '_' + plan.head}"
    extra = {"split": source.split_note, "defence": "raw_isp", "sensor": vars(sensor), "isp_trained_on":
             f"{len(source.train)} clean training images", "randomised": "fresh sensor noise every forward pass"}
    record([EvalResult(protocol, source.spec, "psnr_clean_round_trip", psnr(round_trip, images), 0.0,
                       backbone=target.label, settings=extra)], plan.seed)
    save_rows(figures / "raw_isp_round_trip.png", [
        ImageRow("clean", images[:10]), ImageRow("simulated RAW (mosaic)", capture(images[:10].to(device)).cpu()),
        ImageRow("ISP output", round_trip[:10])], f"{target.label} | RAW defence round trip | {source.spec}")
    subject.model.preprocess = RawDefence(capture, isp)
    record(run_input_space(subject, images, labels, input_space_run(
        plan, protocol, extra, "bpda_", adaptive_attacks(plan.input_attacks, plan.norm)), source.spec, target.label,
        figures, plan.show_progress), plan.seed)
    # Two more rows with PGD's adaptive version only: BPDA of the whole pre-processing as the identity, and a naive
    # exact gradient (rounding's zero gradient, no EOT) that shows what a weak attack would claim.
    for prefix, defence, note in (
            ("bpda_identity_", RawDefence(capture, isp, "identity"), "BPDA: the whole RAW + ISP as the identity"),
            ("exact_grad_", RawDefence(RawCapture(sensor, "exact").to(device), isp),
             "naive: rounding's zero gradient")):
        model = AttackedModel(subject.model.classifier, subject.model.mean.flatten(), subject.model.std.flatten(),
                              defence).to(device).eval()
        attacks = adaptive_attacks(["pgd"], plan.norm) if prefix == "bpda_identity_" else ["pgd"]
        run = input_space_run(plan, protocol, {**extra, "note": note}, prefix, attacks)
        record(run_input_space(AttackSubject(model, subject.num_classes, subject.head, subject.head_settings),
                               images, labels, run, source.spec, target.label, figures, plan.show_progress)[1:],
               plan.seed)


def defend_by_fusion(target: EvalTarget, source: ImageSource, plan: AttackPlan, device: torch.device,
                     record: Recording, figures: Path, partner_spec: str) -> None:
    """Fuses the target with a second backbone under one probe and attacks the fused model end to end."""
    from pretrainlab.pipeline import seeded_target

    partner = seeded_target(partner_spec, target.img_size, target.in_chans)
    subject = fusion_subject([target, partner], source, device, plan.seed)
    images, labels, _ = test_images(target, source.test, plan.max_test)
    extra = {"split": source.split_note, "defence": "fusion", "partner": partner.label,
             "attack_note": "white-box through both backbones (the fused model is differentiable)"}
    run = input_space_run(plan, "defended_fusion", extra)
    record(run_input_space(subject, images, labels, run, source.spec, target.label, figures, plan.show_progress),
           plan.seed)
