"""What each paper's architecture claims structurally: SLAB folds, iLLaMA is causal, complex layers compute complex
arithmetic, twins match in size; the trainer drives schedules; bad sizes and options are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.utils.model import reparameterize_model

from pretrainlab.backbones.complex_cnn import TWINS
from pretrainlab.backbones.complex_layers import ComplexBatchNorm2d, ComplexConv2d, MagnitudeMaxPool2d
from pretrainlab.backbones.prepbn import ProgressiveNorm
from pretrainlab.backbones.slab import SlabTransformer
from pretrainlab.cli import main
from pretrainlab.data.source import ImageSource
from pretrainlab.pipeline import build_run_config, pretrain


def test_slab_schedule_and_folded_model_are_the_same_network() -> None:
    model = timm.create_model("test_slab", num_classes=4, prepbn_warmup=0.1, prepbn_decay=0.2)
    weights = []
    for progress in (0.05, 0.2, 0.5):
        model.set_training_progress(progress)
        weights.append(model.norm.ln_weight)
    assert weights == pytest.approx([1.0, 0.5, 0.0])
    model.set_training_progress(0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):  # BN statistics and RepBN's alpha move away from their initial values
        model(torch.randn(8, 3, 32, 32)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    expected = model(x)
    folded = reparameterize_model(model)
    assert not any(isinstance(m, ProgressiveNorm) for m in folded.modules())
    torch.testing.assert_close(folded(x), expected, atol=1e-5, rtol=1e-4)


def test_slab_attention_is_linear_attention_plus_a_depthwise_convolution() -> None:
    model: SlabTransformer = timm.create_model("test_slab", num_classes=0).eval()
    attention = model.blocks[0].attn
    x = torch.randn(2, 64, 32)
    q, k, v = attention.qkv(x).reshape(2, 64, 3, 32).unbind(2)
    q, k = F.relu(q), F.relu(k + attention.positional_encoding)
    heads = [t.reshape(2, 64, 2, 16).transpose(1, 2) for t in (q, k, v)]
    scores = heads[0] @ heads[1].transpose(-2, -1)  # (B, H, N, N), the quadratic form
    out = (scores / scores.sum(-1, keepdim=True).clamp_min(1e-6)) @ heads[2]
    v_map = heads[2].reshape(4, 64, 16).transpose(1, 2).reshape(4, 16, 8, 8)
    out = out + attention.dwc(v_map).reshape(2, 2, 16, 64).transpose(-2, -1)
    expected = attention.proj(out.transpose(1, 2).reshape(2, 64, 32))
    torch.testing.assert_close(attention(x), expected, atol=1e-4, rtol=1e-3)


def test_illama_is_causal_with_the_class_token_last_and_starts_bidirectional() -> None:
    model = timm.create_model("test_illama", num_classes=0, soft_mask_end=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    changed = x.clone()
    changed[..., -4:, -4:] += 1.0  # the last patch
    with torch.no_grad():
        before, after = model.forward_features(x), model.forward_features(changed)
    # forward_features puts the class token first: earlier patches ignore the last one, the class token sees it
    assert torch.equal(before[:, 1:-1], after[:, 1:-1])
    assert not torch.allclose(before[:, 0], after[:, 0])
    model.train()
    model.set_training_progress(0.1)
    with torch.no_grad():
        before, after = model.forward_features(x), model.forward_features(changed)
    assert not torch.allclose(before[:, 1:-1], after[:, 1:-1])  # bidirectional while the soft mask lasts
    model.set_training_progress(0.6)
    assert model.bidirectional_share == 0.0


def test_complex_convolution_is_complex_multiplication() -> None:
    conv = ComplexConv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 4, 6, 6)
    weight = torch.complex(conv.weight_real, conv.weight_imag)
    expected = F.conv2d(torch.complex(x[:, :2], x[:, 2:]), weight, padding=1)
    out = conv(x)
    torch.testing.assert_close(torch.complex(out[:, :3], out[:, 3:]), expected, atol=1e-5, rtol=1e-4)


def test_complex_batch_norm_whitens_real_and_imaginary_parts() -> None:
    real = torch.randn(64, 2, 5, 5)
    imag = 0.8 * real + 0.3 * torch.randn(64, 2, 5, 5) + 2.0  # correlated, shifted
    out = ComplexBatchNorm2d(2)(torch.cat([real, imag], dim=1))
    for channel in range(2):
        pair = torch.stack([out[:, channel].flatten(), out[:, 2 + channel].flatten()])
        assert pair.mean(dim=1).abs().max() < 1e-4
        torch.testing.assert_close(torch.cov(pair, correction=0), torch.eye(2) / 2, atol=2e-3, rtol=0)


def test_magnitude_pooling_keeps_the_value_of_largest_modulus() -> None:
    real = torch.tensor([[[[1.0, -3.0], [0.5, 0.0]]]])
    imag = torch.tensor([[[[0.0, 0.0], [2.0, 0.1]]]])
    out = MagnitudeMaxPool2d(2)(torch.cat([real, imag], dim=1))
    assert out.flatten().tolist() == [-3.0, 0.0]


@pytest.mark.parametrize("complex_name", sorted(TWINS))
def test_real_twin_has_the_parameters_of_the_complex_network(complex_name: str) -> None:
    with torch.device("meta"):
        counts = [sum(p.numel() for p in timm.create_model(name, num_classes=0).parameters())
                  for name in (complex_name, TWINS[complex_name])]
    assert counts[1] == pytest.approx(counts[0], rel=0.03)


def test_cbnet_lead_backbone_reads_its_assistants() -> None:
    model = timm.create_model("test_cbnet", num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model.forward_intermediates(x, intermediates_only=True)
        model.backbones[0].layer2[0].conv1.weight.mul_(2.0)  # an assistant's weights
        after = model.forward_intermediates(x, intermediates_only=True)
    assert torch.equal(before[0], after[0])  # the lead's first stage sees only assistant stage 1
    assert not torch.allclose(before[1], after[1])


def test_trainer_drives_the_schedule_and_backbone_options_are_saved(tmp_path: Path, builtin_source,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pretrainlab.backbones.illama import ILlama

    seen: list[float] = []
    original = ILlama.set_training_progress
    monkeypatch.setattr(ILlama, "set_training_progress", lambda self, p: (seen.append(p), original(self, p))[1])
    keep = np.arange(64)
    source = ImageSource("builtin", builtin_source.train.subset(keep), builtin_source.test.subset(keep),
                         builtin_source.classes, split_note=builtin_source.split_note)
    config = build_run_config("simclr", {"backbone": "test_illama", "out": str(tmp_path / "run"), "img_size": 32,
                                         "backbone_options": {"soft_mask_end": 0.5}},
                              {"epochs": 2, "batch_size": 32, "warmup_epochs": 0}, {"hidden_dim": 32})
    pretrain(config, show_progress=False, source=source)
    assert seen == [0.0, 0.25, 0.5, 0.75]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "backbone.safetensors"), "pt") as handle:
        assert json.loads(handle.metadata()["create_kwargs"])["soft_mask_end"] == 0.5


@pytest.mark.parametrize("args, message", [
    (["eval", "timm:slab_nano_patch4", "--img-size", "30", "--no-store"], "not divisible by the patch size"),
    (["eval", "timm:moat_nano_cifar", "--img-size", "40", "--no-store"], "not divisible by the network's total"),
    (["eval", "timm:slab_nano_patc4", "--no-store"], "did you mean 'slab_nano_patch4'"),
    (["pretrain", "--method", "mae", "--backbone", "test_illama", "--img-size", "32"], "another structure"),
    (["pretrain", "--method", "simclr", "--backbone", "test_illama", "--img-size", "32", "--backbone-option",
      "soft_mask_end=2"], "soft_mask_end in [0, 1]"),
    (["pretrain", "--method", "simclr", "--backbone", "test_slab", "--img-size", "32", "--backbone-option",
      "no_such_option=1"], "does not take the options ['no_such_option']"),
])
def test_bad_architecture_input_is_one_line_and_exit_code_2(args: list[str], message: str,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
