"""AdvEncoder: one universal perturbation from the encoder and unlabeled images fools a trained classifier's head
more often than random noise of the same L-inf norm; its budget holds; records name every head."""

from __future__ import annotations

import pytest
import torch
from attack_data import digit_pixels, digits, trained_tinycnn

from pretrainlab.attack.model import predict
from pretrainlab.attack.universal import FeatureModel, UniversalSettings, high_frequency, train_universal
from pretrainlab.attack.universal_heads import (
    Downstream,
    fooling_rate,
    random_counterpart,
    universal_pixels,
    universal_records,
)


def test_universal_perturbation_beats_same_norm_noise_on_a_tiny_trained_model() -> None:
    target, subject = trained_tinycnn()
    images, labels = digit_pixels()
    model = subject.model
    encoder = FeatureModel(target.backbone, model.mean.flatten(), model.std.flatten())
    surrogate = universal_pixels(target, digits(), 300)  # training images; their labels are never read
    eps = 8 / 255
    attack = train_universal(encoder, surrogate, UniversalSettings(eps=eps, steps=60, batch_size=32), seed=0)
    noise = random_counterpart(attack, eps, seed=0)
    assert float(attack.perturbation.abs().max()) <= eps + 1e-6 and attack.perturbation.shape == (1, 1, 28, 28)
    assert float(noise.perturbation.abs().min()) == pytest.approx(eps)
    assert attack.perturb(images).min() >= 0 and attack.perturb(images).max() <= 1
    run = lambda pixels: predict(model, pixels)  # noqa: E731
    universal, random = fooling_rate(run, images, attack.perturb), fooling_rate(run, images, noise.perturb)
    assert universal > random + 5, f"universal {universal:.1f} % vs same-norm noise {random:.1f} %"
    assert attack.mask.sum() == round((0.03 * 28 * 28) ** 0.5) ** 2
    records = universal_records(attack, [Downstream("linear", run, images, labels)], eps, 0.03, 0, "builtin",
                                "tiny", {})
    assert [r.metric for r in records] == ["perturbation_8/255@linear", "noise_8/255@linear", "patch_3%@linear",
                                           "noise_patch_3%@linear"]
    assert records[0].value == universal and not records[0].higher_is_better


def test_high_frequency_filter_removes_constant_images_and_keeps_checkerboards() -> None:
    constant = torch.full((1, 1, 16, 16), 0.7)
    checker = (torch.arange(16).view(-1, 1) + torch.arange(16).view(1, -1)).remainder(2).float().view(1, 1, 16, 16)
    assert high_frequency(constant, 4).abs().max() < 1e-5
    assert torch.allclose(high_frequency(checker - 0.5, 4), checker - 0.5, atol=1e-5)
