"""Attacks beyond one budgeted input perturbation: AdvEncoder's universal perturbation from the encoder alone
(universal.py), the feature-space targeted attack (feature_space.py) and fooling images (fooling.py); each
writes records and a figure.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pretrainlab.attack.evaluation import test_images
from pretrainlab.attack.feature_space import (
    LayerFeatures,
    feature_attack,
    feature_records,
    resolve_layer,
    target_pairs,
)
from pretrainlab.attack.figures import MAGNIFY, ImageRow, magnified, save_rows
from pretrainlab.attack.fooling import METHODS as FOOLING_METHODS
from pretrainlab.attack.fooling import fooling_images
from pretrainlab.attack.input_space import eps_label
from pretrainlab.attack.model import build_subject, predict, probe_subject
from pretrainlab.attack.options import fooling_settings, typed, universal_settings
from pretrainlab.attack.plan import AttackPlan, Recording, listed
from pretrainlab.attack.universal import FeatureModel, train_universal
from pretrainlab.attack.universal_heads import (
    build_downstreams,
    universal_figure_rows,
    universal_pixels,
    universal_records,
)
from pretrainlab.data import ImageSource, load_source
from pretrainlab.data.subsets import limit_source
from pretrainlab.eval.features import normalisation
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget


def attack_universal(target: EvalTarget, source: ImageSource, plan: AttackPlan, device: torch.device,
                     record: Recording, figures: Path) -> None:
    """AdvEncoder from the encoder and unlabeled surrogate images; fooling rates on heads it never saw."""
    from pretrainlab.pipeline import seeded_target

    settings, options = universal_settings(plan.options, plan.eps), plan.options
    surrogate = load_source(str(options["surrogate"])) if options.get("surrogate") else source
    mean, std = normalisation(target, source.train.images)
    encoder = FeatureModel(target.backbone, mean, std).to(device)
    surrogate_pixels = universal_pixels(target, surrogate, typed(options, "universal_images", 2000))
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


def attack_feature_space(target: EvalTarget, source: ImageSource, plan: AttackPlan, device: torch.device,
                         record: Recording, figures: Path) -> None:
    """Aafaq et al.'s targeted feature attack at each budget; the probe measures whether the target class follows."""
    options = plan.options
    mean, std = normalisation(target, source.train.images)
    encoder = LayerFeatures(target.backbone, mean, std).to(device)
    subject = probe_subject(target, source, device, plan.seed)
    images, labels, _ = test_images(target, source.test, plan.max_test)
    layer = resolve_layer(str(options.get("feature_layer", "-1")), encoder.layer_names(images.to(device)))
    sources, targets = target_pairs(labels, typed(options, "feature_pairs", 100), plan.seed)
    steps = typed(options, "feature_steps", 20)
    settings = {"steps": steps, "probe": "linear", **subject.head_settings, "split": source.split_note,
                "seed": plan.seed}
    for eps in plan.eps:
        started = time.perf_counter()
        outcome = feature_attack(encoder, images[sources], images[targets], layer, eps, steps,
                                 show_progress=plan.show_progress)
        predicted = predict(subject.model, outcome.adversarial)
        hits = predicted == labels[targets]
        record(feature_records(outcome, hits, layer, eps, time.perf_counter() - started, source.spec, target.label,
                               settings), plan.seed)
    count = min(10, len(sources))
    rows = [ImageRow("source", images[sources][:count], [f"class {int(c)}" for c in labels[sources][:count]]),
            ImageRow(f"attacked (eps {eps_label(eps)})", outcome.adversarial[:count],
                     [f"pred {int(p)}" for p in predicted[:count]], ~hits[:count]),
            ImageRow(f"perturbation x{MAGNIFY:g}", magnified(outcome.adversarial[:count] - images[sources][:count])),
            ImageRow("target", images[targets][:count], [f"class {int(c)}" for c in labels[targets][:count]])]
    save_rows(figures / f"feature_{layer}.png", rows, f"{target.label} | feature-space attack towards the target at "
              f"{layer} | probe predictions (black = target class reached)")


def attack_fooling(target: EvalTarget, source: ImageSource, plan: AttackPlan, device: torch.device,
                   record: Recording, figures: Path) -> None:
    """Nguyen et al.'s fooling images for every class of the head: the best confidence each search reaches."""
    settings = fooling_settings(plan.options)
    methods = listed(plan.options.get("fooling_methods"), list(FOOLING_METHODS))
    subject = build_subject(target, source, device, plan.head, plan.options, plan.seed)
    shape = (target.in_chans, target.img_size, target.img_size)
    results = fooling_images(subject.model, subject.num_classes, shape, methods, settings, plan.seed,
                             plan.show_progress)
    names = source.classes or [str(index) for index in range(subject.num_classes)]
    records, rows = [], []
    for result in results:
        confidences = [float(value) for value in result.confidences]
        reached = sum(value >= settings.threshold for value in confidences)
        common = {"per_class_confidence": dict(zip(names, confidences, strict=False)), "images_scored":
                  result.evaluations, "head": subject.head, **subject.head_settings, "settings": vars(settings),
                  "seed": plan.seed, "split": source.split_note}
        records += [EvalResult("fooling_images", source.spec, f"confidence@{result.method}",
                               100 * sum(confidences) / len(confidences), result.seconds, higher_is_better=False,
                               backbone=target.label, settings=common),
                    EvalResult("fooling_images", source.spec, f"classes_reached@{result.method}", float(reached),
                               result.seconds, higher_is_better=False, backbone=target.label,
                               settings={**common, "threshold": settings.threshold})]
        rows.append(ImageRow(result.method, result.images, [f"{name[:9]} {100 * value:.2f}%" for name, value in
                                                            zip(names, confidences, strict=False)],
                             result.confidences < settings.threshold))
    record(records, plan.seed)
    save_rows(figures / "fooling.png", rows, f"{target.label} | fooling images, one per class | confidence of "
              f"the {subject.head} head (red: below {settings.threshold:.0%})")
