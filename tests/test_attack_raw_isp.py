"""The RAW defence: the clean round trip stays close (PSNR), the ISP is trained on clean images only and never
changes afterwards, BPDA passes gradients through the quantiser that an exact gradient would zero, and through
the whole pre-processing as the identity."""

from __future__ import annotations

import functools

import numpy as np
import torch
from attack_data import digit_pixels, digits, probed_tinycnn

from pretrainlab.attack.defences.raw_isp import (
    IspTraining,
    RawCapture,
    RawDefence,
    bayer_sites,
    psnr,
    train_isp,
)
from pretrainlab.attack.defended import adaptive_attacks
from pretrainlab.attack.input_space import AttackSettings
from pretrainlab.attack.model import AttackedModel, pixels
from pretrainlab.attack.robustness import attack_batches


@functools.cache
def trained_isp() -> tuple[object, list[np.ndarray]]:
    """An ISP trained for 60 steps on 300 clean digits, and every uint8 batch its training asked for."""
    target, _ = probed_tinycnn()
    seen: list[np.ndarray] = []

    def to_pixels(images: np.ndarray) -> torch.Tensor:
        seen.append(images.copy())
        return pixels(target, images)

    isp = train_isp(digits().train.images, to_pixels, 1, RawCapture(), IspTraining(steps=60), seed=0)
    return isp, seen


def test_clean_round_trip_is_close_and_better_than_the_raw_mosaic() -> None:
    isp, _ = trained_isp()
    images, _ = digit_pixels()
    capture = RawCapture()
    with torch.no_grad():
        restored = isp(capture(images, torch.Generator().manual_seed(0)))
    assert restored.shape == images.shape and restored.min() >= 0 and restored.max() <= 1
    assert psnr(restored, images) > 20.0
    assert psnr(restored, images) > psnr(capture(images), images) + 3


def test_the_isp_only_ever_sees_clean_training_images_and_is_frozen_under_attack() -> None:
    isp, seen = trained_isp()
    clean = {image.tobytes() for image in digits().train.images}
    assert len(seen) == 60 and all(image.tobytes() in clean for batch in seen for image in batch)
    target, subject = probed_tinycnn()
    before = {name: value.clone() for name, value in isp.state_dict().items()}
    defended = AttackedModel(subject.model.classifier, subject.model.mean.flatten(), subject.model.std.flatten(),
                             RawDefence(RawCapture(), isp))
    images, labels = digit_pixels()
    attack_batches(defended, "eot_pgd", images[:8], labels[:8], 8 / 255, "linf",
                   AttackSettings(steps=2, eot_samples=2), 10, 0, 256)
    assert all(torch.equal(before[name], value) for name, value in isp.state_dict().items())
    assert not any(parameter.requires_grad for parameter in isp.parameters()) and not isp.training


def test_bpda_passes_gradients_through_the_quantiser_that_exact_rounding_zeroes() -> None:
    isp, _ = trained_isp()
    images, _ = digit_pixels()
    gradients = {}
    for mode in ("bpda", "exact"):
        x = images[:4].clone().requires_grad_(True)
        RawDefence(RawCapture(gradient=mode), isp)(x).sum().backward()
        gradients[mode] = x.grad
    assert gradients["bpda"].abs().sum() > 0 and gradients["exact"].abs().sum() == 0
    x = images[:4].clone().requires_grad_(True)
    identity = RawDefence(RawCapture(), isp, "identity")
    restored = identity(x)
    restored.sum().backward()  # BPDA of the whole pre-processing: forward the defence, backward the identity
    assert torch.equal(x.grad, torch.ones_like(x)) and not torch.allclose(restored, x, atol=1e-3)


def test_bayer_sites_and_adaptive_attack_choice() -> None:
    sites = bayer_sites(4, 4)
    assert torch.equal(sites.sum(0), torch.ones(4, 4)) and sites[1].sum() == 8  # RGGB: half the sites are green
    assert adaptive_attacks(["pgd", "fgsm", "autoattack", "apgd"], "linf") == ["eot_pgd", "fgsm", "autoattack_rand"]
    assert adaptive_attacks(["pgd"], "l2") == ["autoattack_rand"]


def test_cli_raw_defence_rows_name_their_adaptive_attack(tmp_path, capsys) -> None:
    from pretrainlab.cli import main

    code = main(["attack", "timm:tinycnn", "--data", "builtin", "--max-train", "100", "--max-test", "10",
                 "--defence", "raw_isp", "--attack", "pgd", "--eps", "8/255", "--option", "raw_isp_steps=3",
                 "--option", "steps=1", "--option", "eot_samples=1", "--no-store", "--figures", str(tmp_path),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    for metric in ("psnr_clean_round_trip", "top1@clean", "bpda_eot_pgd_linf@8/255", "bpda_identity_eot_pgd_linf@8/255",
                   "exact_grad_pgd_linf@8/255"):
        assert f"defended_raw_isp       {metric}" in out, out
    assert (tmp_path / "raw_isp_round_trip.png").is_file()
