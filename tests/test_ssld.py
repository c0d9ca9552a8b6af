"""SSLD: the distillation losses against naive sums, a teacher that never changes, teacher loading and errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from pretrainlab.backbones import create_backbone, save_backbone
from pretrainlab.config import build_config
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.distillation import embedding_distance, js_divergence, kl_divergence
from pretrainlab.methods import METHODS, MethodContext


def naive_probabilities(logits: list[float]) -> list[float]:
    exps = [math.exp(v) for v in logits]
    return [e / sum(exps) for e in exps]


def naive_kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_kl_and_js_match_naive_sums() -> None:
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    student = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    kl_expected, js_expected = 0.0, 0.0
    for row in range(5):
        p, q = naive_probabilities(teacher[row].tolist()), naive_probabilities(student[row].tolist())
        m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
        kl_expected += naive_kl(p, q) / 5
        js_expected += (0.5 * naive_kl(p, m) + 0.5 * naive_kl(q, m)) / 5
    assert float(kl_divergence(teacher, student)) == pytest.approx(kl_expected, rel=1e-5)
    assert float(js_divergence(teacher, student)) == pytest.approx(js_expected, rel=1e-5)


def test_js_is_symmetric_bounded_and_zero_on_agreement() -> None:
    teacher, student = torch.randn(4, 6) * 5, torch.randn(4, 6) * 5
    assert float(js_divergence(teacher, student)) == pytest.approx(float(js_divergence(student, teacher)), rel=1e-5)
    assert 0.0 < float(js_divergence(teacher, student)) <= math.log(2) + 1e-6
    assert float(js_divergence(teacher, teacher.clone())) == pytest.approx(0.0, abs=1e-6)


def test_embedding_distances_match_naive_formulas() -> None:
    student, teacher = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    cosines = [float(student[i] @ teacher[i] / (student[i].norm() * teacher[i].norm())) for i in range(3)]
    assert float(embedding_distance(student, teacher, "cosine")) == pytest.approx(sum(1 - c for c in cosines) / 3)
    squared = sum(float((student[i, j] - teacher[i, j]) ** 2) for i in range(3) for j in range(4)) / 12
    assert float(embedding_distance(student, teacher, "mse")) == pytest.approx(squared)


def make_ssld(in_chans: int = 1, img_size: int = 32, **options):
    method_class = METHODS.get("ssld")
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, "ssld")
    context = MethodContext(img_size=img_size, in_chans=in_chans, mean=(0.3,) * in_chans, std=(0.2,) * in_chans)
    return method_class(create_backbone("tinycnn", img_size, in_chans), config, context)


def make_teacher_run(folder: Path, in_chans: int, img_size: int = 32) -> torch.nn.Module:
    """A finished run folder: backbone.safetensors and the resolved statistics in config.yaml."""
    folder.mkdir(parents=True)
    backbone = create_backbone("tinycnn", img_size, in_chans)
    save_backbone(backbone, folder / "backbone.safetensors")
    resolved = {"img_size": img_size, "mean": [0.5] * in_chans, "std": [0.25] * in_chans}
    (folder / "config.yaml").write_text(yaml.safe_dump({"method": "simclr", "resolved": resolved}))
    return backbone


@pytest.mark.parametrize("options", [{}, {"mode": "embedding"}, {"mode": "embedding", "embedding_loss": "mse"}])
def test_teacher_is_never_trained(options: dict, rgb_batch: torch.Tensor) -> None:
    method = make_ssld(**options)
    method.train()
    assert not method.teacher.training and not method.teacher.backbone.training
    teacher_state = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    assert not any(p.requires_grad for p in method.teacher.parameters())
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    student_before = [p.clone() for p in method.backbone.parameters()]
    for _ in range(2):
        batch = method.prepare_batch(rgb_batch[..., :1], None, torch.Generator().manual_seed(0))
        loss = method(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for key, value in method.teacher.state_dict().items():  # weights and BatchNorm statistics alike
        assert torch.equal(value, teacher_state[key]), f"teacher tensor {key} changed"
    assert any(not torch.equal(a, b) for a, b in zip(student_before, method.backbone.parameters(), strict=True))
    assert all(p is not q for p in method.backbone.parameters() for q in method.teacher.parameters())


def test_anchor_queue_fills_with_teacher_embeddings(rgb_batch: torch.Tensor) -> None:
    method = make_ssld()
    method.train()
    batch = method.prepare_batch(rgb_batch[..., :1], None, torch.Generator().manual_seed(0))
    outputs = method(batch)
    assert int(method.anchors.filled) == 16 and 0.0 <= float(outputs["teacher_agreement"]) <= 1.0
    embedding, _ = method.teacher(batch.views["base"][0].images)
    assert torch.allclose(method.anchors.valid(), torch.nn.functional.normalize(embedding, dim=1), atol=1e-6)


def test_run_folder_teacher_is_loaded_and_views_renormalised(tmp_path: Path) -> None:
    saved = make_teacher_run(tmp_path / "teacher", in_chans=3)
    method = make_ssld(in_chans=1, teacher=str(tmp_path / "teacher"))  # 1-channel data, 3-channel teacher
    for key, value in saved.model.state_dict().items():
        assert torch.equal(method.teacher.backbone.model.state_dict()[key], value)
    pixels = torch.rand(2, 1, 32, 32)
    student_views = (pixels - 0.3) / 0.2
    adapted = method.teacher.adapt(student_views)
    assert torch.allclose(adapted, ((pixels - 0.5) / 0.25).repeat(1, 3, 1, 1), atol=1e-5)


def test_teacher_with_a_classifier_distils_its_class_probabilities(tmp_path: Path) -> None:
    import timm

    classifier_model = timm.create_model("tinycnn", num_classes=5, in_chans=1)
    state = {k: v.contiguous() for k, v in classifier_model.state_dict().items()}
    save_file(state, str(tmp_path / "teacher.safetensors"))
    method = make_ssld(teacher_weights=str(tmp_path / "teacher.safetensors"))
    assert method.uses_classes and method.student_head.out_features == 5
    images = torch.randn(3, 1, 32, 32)
    classifier_model.eval()
    _, logits = method.teacher(images)
    assert torch.allclose(logits, classifier_model(images), atol=1e-5)


def test_missing_or_wrong_teachers_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PretrainlabError, match="needs a teacher"):
        make_ssld(teacher="")
    with pytest.raises(PretrainlabError, match="neither a run folder"):
        make_ssld(teacher=str(tmp_path / "missing"))
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(PretrainlabError, match="no backbone.safetensors"):
        make_ssld(teacher=str(tmp_path / "unfinished"))
    with pytest.raises(PretrainlabError, match="unknown backbone"):
        make_ssld(teacher="timm:tinycnnn")
    with pytest.raises(PretrainlabError, match="teacher weights not found"):
        make_ssld(teacher_weights=str(tmp_path / "nothing.safetensors"))
    with pytest.raises(PretrainlabError, match="differs from teacher width"):
        make_ssld(teacher="timm:resnet18_cifar", mode="embedding", projection_layers=0)
    with pytest.raises(PretrainlabError, match="unknown ssld mode"):
        make_ssld(mode="logits")
