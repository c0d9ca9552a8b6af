"""Tiny models and data shared by the attack tests, built once per test session (2 CPU cores: keep them small)."""

from __future__ import annotations

import functools

import torch
from protocol_data import small_source

from pretrainlab.attack.model import AttackSubject, build_subject, pixels
from pretrainlab.data import ImageSource, load_source
from pretrainlab.eval import EvalTarget, load_target

CPU = torch.device("cpu")


@functools.cache
def digits(train_per_class: int = 30, test_per_class: int = 6) -> ImageSource:
    """A class-balanced slice of the builtin MNIST digits (28 px, grey)."""
    return small_source(load_source("builtin"), train_per_class, test_per_class)


@functools.cache
def probed_tinycnn() -> tuple[EvalTarget, AttackSubject]:
    """A random tinycnn (seed 0) with the linear probe fitted on 300 digits: well above chance, cheap to attack."""
    torch.manual_seed(0)
    target = load_target("timm:tinycnn", 28, 1)
    return target, build_subject(target, digits(), CPU, "linear", seed=0)


def digit_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """The 60 test digits as (60, 1, 28, 28) pixels in [0, 1] and their labels (60,)."""
    target, _ = probed_tinycnn()
    source = digits()
    return pixels(target, source.test.images), torch.from_numpy(source.test.labels).long()


@functools.cache
def trained_tinycnn() -> tuple[EvalTarget, AttackSubject]:
    """A tinycnn fine-tuned end to end on 300 digits for 60 steps (seed 0): a tiny trained classifier."""
    torch.manual_seed(0)
    target = load_target("timm:tinycnn", 28, 1)
    options = {"epochs": 1, "min_steps": 60, "batch_size": 32, "lr": 3e-3, "flip_p": 0.0}
    subject = build_subject(target, digits(), CPU, "finetune", options, seed=0)
    subject.model.classifier.backbone.requires_grad_(True)
    return EvalTarget(subject.model.classifier.backbone, "tiny-trained", 28), subject
