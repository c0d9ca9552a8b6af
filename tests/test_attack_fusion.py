"""Contextual fusion: two backbones, each fed in its own format, one probe on their concatenated features,
attacked end to end."""

from __future__ import annotations

import torch
from attack_data import CPU, digit_pixels, digits

from pretrainlab.attack.defences.fusion import fusion_subject
from pretrainlab.attack.robustness import robust_accuracy
from pretrainlab.cli import main
from pretrainlab.eval import load_target


def test_fused_probe_sees_both_backbones_and_is_attacked_through_both() -> None:
    torch.manual_seed(0)
    first = load_target("timm:tinycnn", 28, 1)
    torch.manual_seed(1)
    second = load_target("timm:tinycnn", 32, 3)  # another input format: 3 channels at 32 px
    subject = fusion_subject([first, second], digits(), CPU, seed=0)
    fused = subject.model.classifier.backbone
    assert fused.embed_dim == 256 and subject.head_settings["feature_dims"] == [128, 128]
    images, labels = digit_pixels()
    x = images[:4].clone().requires_grad_(True)
    features = fused.pooled(x)
    features[:, :128].sum().backward(retain_graph=True)
    first_gradient = x.grad.clone()
    x.grad = None
    features[:, 128:].sum().backward()
    assert first_gradient.abs().sum() > 0 and x.grad.abs().sum() > 0  # both members see the attacked pixels
    outcome = robust_accuracy(subject.model, images, labels, "pgd", [8 / 255], "linf")
    assert outcome.clean_accuracy > 40 and outcome.per_eps[0].robust_accuracy <= outcome.clean_accuracy


def test_fusion_with_another_head_is_refused(capsys) -> None:
    code = main(["attack", "timm:tinycnn", "--defence", "fusion:timm:tinycnn", "--head", "finetune", "--no-store"])
    assert code == 2 and "drop --head finetune" in capsys.readouterr().err
