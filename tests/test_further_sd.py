"""Self-distillation for further pre-training: init and teacher loading, the distillation term, the two stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pretrainlab.backbones import create_backbone, save_backbone
from pretrainlab.backbones.vit_parts import patchify
from pretrainlab.config import build_config
from pretrainlab.data.masks import random_patch_mask
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.pipeline import build_run_config, pretrain
from pretrainlab.train.optim import parameter_groups

CONTEXT = MethodContext(img_size=32, in_chans=1, mean=(0.5,), std=(0.25,))


def saved_backbone(folder: Path, seed: int, name: str = "vit_nano_patch4") -> Path:
    torch.manual_seed(seed)
    folder.mkdir(parents=True)
    save_backbone(create_backbone(name, 32, 1), folder / "backbone.safetensors")
    return folder


def student(**options: object):  # noqa: ANN201
    method_class = METHODS.get("further_sd")
    config = build_config(method_class.config_class, {**method_class.example_options, **options}, "further_sd")
    torch.manual_seed(99)
    return method_class(create_backbone("vit_nano_patch4", 32, 1), config, CONTEXT)


def test_init_and_teacher_are_loaded_and_the_teacher_stays_frozen(tmp_path: Path) -> None:
    initial, teacher = saved_backbone(tmp_path / "initial", 1), saved_backbone(tmp_path / "teacher", 2)
    method = student(init=str(initial), teacher=str(teacher)).train()
    torch.manual_seed(1)  # the seed saved_backbone used for the initial weights
    reference = create_backbone("vit_nano_patch4", 32, 1)
    for (key, value), expected in zip(method.backbone.model.state_dict().items(),
                                      reference.model.state_dict().values(), strict=True):
        torch.testing.assert_close(value, expected, msg=key)
    assert not method.teacher.training and not any(p.requires_grad for p in method.teacher.parameters())
    optimised = {id(p) for group in parameter_groups(method, 0.05) for p in group["params"]}
    assert not any(id(p) in optimised for p in method.teacher.parameters())


def test_loss_is_mae_plus_weighted_token_distance(tmp_path: Path, rgb_batch: torch.Tensor) -> None:
    method = student(teacher=str(saved_backbone(tmp_path / "teacher", 3)), distill_weight=0.7).train()
    batch = method.prepare_batch(rgb_batch[..., :1], None, torch.Generator().manual_seed(4))
    state = batch.generator.get_state()
    outputs = method(batch)
    batch.generator.set_state(state)
    images = batch.views["base"][0].images
    mask = random_patch_mask(16, 64, 0.75, batch.generator)
    reconstruction = masked_patch_loss(method.reconstruct(images, mask)[0], patchify(images, 4), mask, True)
    student_tokens, teacher_tokens = method.backbone.tokens(images), method.teacher.tokens(images)
    distances = [((student_tokens[b, t] - teacher_tokens[b, t]) ** 2).mean() for b in range(16)
                 for t in range(student_tokens.shape[1])]
    distillation = torch.stack(distances).mean()
    torch.testing.assert_close(outputs["distill_loss"], distillation.detach())
    torch.testing.assert_close(outputs["loss"], reconstruction + 0.7 * distillation)
    outputs["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())


def test_bad_teachers_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(PretrainlabError, match="has no weights"):
        student(teacher=str(tmp_path / "missing"))
    other = saved_backbone(tmp_path / "other", 5, name="vit_tiny_patch4")
    with pytest.raises(PretrainlabError, match="same --backbone"):
        student(teacher=str(other))
    with pytest.raises(PretrainlabError, match="distill_weight"):
        student(distill_weight=-1.0)


def test_two_stage_workflow_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    source = ImageSource("memory", ImageSet(rng.integers(0, 256, (32, 32, 32, 1), dtype=np.uint8)))
    tiny = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}
    train = {"epochs": 1, "batch_size": 16, "device": "cpu", "warmup_epochs": 0}
    initial = saved_backbone(tmp_path / "initial", 6)
    stages = {"teacher": {"init": str(initial)},
              "student": {"init": str(initial), "teacher": str(tmp_path / "teacher")}}
    for stage, options in stages.items():
        config = build_run_config("further_sd", {"backbone": "vit_nano_patch4", "out": str(tmp_path / stage)}, train,
                                  {**tiny, **options})
        pretrain(config, source=source, show_progress=False)
    logged = (tmp_path / "student" / "metrics.jsonl").read_text()
    assert "distill_loss" in logged and "distill_loss" not in (tmp_path / "teacher" / "metrics.jsonl").read_text()
