"""Fine-tuning: learning signal, determinism, the target left untouched, wrapped backbones, layer decay."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
from protocol_data import small_source

from pretrainlab.backbones import create_backbone
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, EvalTarget, evaluate, load_target
from pretrainlab.eval.classifier_training import Classifier, TrainingSettings, plan_steps
from pretrainlab.eval.finetuning import FineTuning
from pretrainlab.eval.layer_decay import default_layer_decay, layer_decay_groups

TINY = {"epochs": 1, "min_steps": 3, "batch_size": 16}


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def test_finetuning_a_tinycnn_learns_the_digits_far_above_chance(builtin_source):
    """Two short epochs from random init on 1,000 builtin digits (no flip: digits are not mirror-symmetric)."""
    source = small_source(builtin_source, 100, 40)
    target = load_target("timm:tinycnn", 28, 1)
    before = snapshot(target.backbone)
    context = EvalContext(target, source, torch.device("cpu"),
                          {"epochs": 2, "batch_size": 16, "flip_p": 0.0, "min_steps": 0, "seed": 0})
    [result] = evaluate(context, "finetune")
    assert result.metric == "top1" and result.settings["epochs"] == 2 and result.settings["layer_decay"] == 1.0
    assert result.value > 50.0, f"fine-tuning reached only {result.value:.1f} % (chance is 10 %)"
    after = snapshot(target.backbone)
    assert all(torch.equal(before[name], after[name]) for name in before), "fine-tuning modified the target"


def test_finetuning_is_deterministic_for_a_seed_and_differs_across_seeds(builtin_source):
    source = small_source(builtin_source, 6, 4)

    def logits(seed: int) -> torch.Tensor:
        torch.manual_seed(7)  # the same random backbone every time
        context = EvalContext(load_target("timm:tinycnn", 28, 1), source, torch.device("cpu"), {**TINY})
        tuning = FineTuning(context)
        torch.manual_seed(1234 + seed)  # the global RNG state must not matter
        model = tuning.finetune(source.train.images, source.train.labels, seed)
        model.eval()
        return model(tuning.inputs(source.test.images).eval_batch(torch.arange(8).numpy()))

    first, again, other = logits(0), logits(0), logits(1)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


class MiddleOfHead(nn.Module):
    """Stands in for a SimCLRv2 head's middle layer wrapped as a backbone: pooled() and embed_dim only."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = create_backbone("tinycnn", 28, 1)
        self.layer = nn.Sequential(nn.Linear(self.encoder.embed_dim, 24), nn.BatchNorm1d(24), nn.ReLU())
        self.embed_dim = 24
        self.create_kwargs = {"in_chans": 1}

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.encoder.pooled(x))


def test_finetuning_works_on_any_wrapped_backbone_and_trains_the_wrapper(builtin_source):
    source = small_source(builtin_source, 6, 4)
    wrapper = MiddleOfHead()
    before = snapshot(wrapper)
    context = EvalContext(EvalTarget(wrapper, "run@head.1", 28), source, torch.device("cpu"), {**TINY})
    tuning = FineTuning(context)
    model = tuning.finetune(source.train.images, source.train.labels, 0)
    assert model.head.in_features == 24 and model.norm.num_features == 24
    assert not torch.equal(model.backbone.layer[0].weight, before["layer.0.weight"]), "the head layer did not train"
    assert not torch.equal(model.backbone.encoder.model.stages[0][0].weight, before["encoder.model.stages.0.0.weight"])
    assert all(torch.equal(before[name], value) for name, value in wrapper.state_dict().items())
    [result] = evaluate(context, "finetune")
    assert 0.0 <= result.value <= 100.0


def test_layer_decay_matches_the_mae_recipe_for_a_vit():
    """MAE: stem layer 0, block i layer i + 1, final norm and head layer depth + 1; scale decay ** (top - layer)."""
    backbone = create_backbone("vit_nano_patch4", 32, 1)
    model = Classifier(backbone, 10)
    decay, depth = 0.6, len(backbone.model.blocks)
    groups = layer_decay_groups(model, weight_decay=0.05, layer_decay=decay)
    scale_of = {id(p): group["lr_scale"] for group in groups for p in group["params"]}
    decayed = {id(p): group["weight_decay"] for group in groups for p in group["params"]}
    for name, parameter in model.named_parameters():
        block = re.search(r"\.blocks\.(\d+)\.", name)
        if block:
            layer = int(block.group(1)) + 1
        elif re.search(r"(cls_token|pos_embed|patch_embed)", name):
            layer = 0
        else:
            layer = depth + 1
        assert scale_of[id(parameter)] == pytest.approx(decay ** (depth + 1 - layer)), name
        assert decayed[id(parameter)] == (0.0 if parameter.ndim <= 1 or name.endswith(("token", "pos_embed"))
                                          else 0.05), name
    assert default_layer_decay(backbone) == 0.75
    assert default_layer_decay(create_backbone("tinycnn", 28, 1)) == 1.0


def test_a_vit_fine_tunes_end_to_end_with_layer_decay(builtin_source):
    source = small_source(builtin_source, 3, 2)
    context = EvalContext(load_target("timm:vit_nano_patch4", 32, 1), source, torch.device("cpu"), {**TINY})
    [result] = evaluate(context, "finetune")
    assert result.settings["layer_decay"] == 0.75 and result.settings["steps"] == 3


def test_training_plan_and_options():
    settings = TrainingSettings(epochs=5, batch_size=64, min_steps=50)
    assert plan_steps(40, settings) == (40, 1, 50)  # a tiny subset still gets min_steps steps
    assert plan_steps(4000, settings) == (64, 62, 5)
    parsed = TrainingSettings.from_options({"epochs": "3", "lr": 0.01, "optimizer": "sgd", "k": 20}, epochs=7)
    assert (parsed.epochs, parsed.lr, parsed.optimizer) == (3, 0.01, "sgd")
    assert TrainingSettings.from_options({}, epochs=7).epochs == 7
    with pytest.raises(PretrainlabError, match="option epochs must be an integer"):
        TrainingSettings.from_options({"epochs": "many"})
    with pytest.raises(PretrainlabError, match="unknown optimizer 'adam'"):
        TrainingSettings(optimizer="adam")
