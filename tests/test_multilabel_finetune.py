"""Multi-label fine-tuning and the medical fine-tuning options: layer-wise decay, drop-path, RandAugment."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.cli import main
from pretrainlab.data import load_source
from pretrainlab.data.randaugment import randaugment_batch
from pretrainlab.data.subsets import random_fraction_subset
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, evaluate, load_target
from pretrainlab.eval.classifier_training import Classifier, TrainingSettings, build_optimizer
from pretrainlab.eval.drop_path import drop_path_rates, with_drop_path
from pretrainlab.eval.finetuning import FineTuning
from pretrainlab.eval.layer_decay import layer_decay_groups
from pretrainlab.train.optim import set_learning_rate

TINY = {"epochs": 1, "min_steps": 3, "batch_size": 8}


@pytest.fixture(scope="module")
def canvases():
    return load_source("composed:builtin:48")  # 48 training, 12 test canvases of 56 px, multi-hot (N, 10)


def test_layer_decay_sets_each_layers_learning_rate_as_computed_by_hand() -> None:
    """vit_nano (4 blocks), decay 0.5, peak lr 1e-3: the stem learns at 1e-3 * 0.5^5, block i at 0.5^(4 - i)."""
    model = Classifier(create_backbone("vit_nano_patch4", 16, 1), 3)
    optimizer = build_optimizer(layer_decay_groups(model, 0.05, 0.5), TrainingSettings())
    set_learning_rate(optimizer, 1e-3)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    parameters = dict(model.named_parameters())
    expected = {"backbone.model.patch_embed.proj.weight": 3.125e-5, "backbone.model.pos_embed": 3.125e-5,
                "backbone.model.cls_token": 3.125e-5, "backbone.model.blocks.0.attn.qkv.weight": 6.25e-5,
                "backbone.model.blocks.1.mlp.fc1.weight": 1.25e-4, "backbone.model.blocks.2.norm1.weight": 2.5e-4,
                "backbone.model.blocks.3.mlp.fc2.bias": 5e-4, "backbone.model.fc_norm.weight": 1e-3,
                "head.weight": 1e-3, "head.bias": 1e-3}
    for name, lr in expected.items():
        assert lr_of[id(parameters[name])] == pytest.approx(lr), name


def test_drop_path_follows_timms_linear_rule_and_acts_in_training_mode_only() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("vit_nano_patch4", 16, 1).eval()
    dropped = with_drop_path(backbone, 0.3)
    # 4 blocks: rates 0, 0.1, 0.2, 0.3 (block 0's rate 0 is an identity), each on the attention and MLP branch
    assert drop_path_rates(dropped) == pytest.approx([0.1, 0.1, 0.2, 0.2, 0.3, 0.3])
    assert drop_path_rates(backbone) == [] and with_drop_path(backbone, 0.0) is backbone
    images = torch.randn(8, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(dropped.eval().pooled(images), backbone.pooled(images))  # same weights, all kept
        dropped.train()
        first, second = dropped.pooled(images), dropped.pooled(images)
    assert not torch.allclose(first, second), "drop-path drew no different branches in training mode"
    with pytest.raises(PretrainlabError, match="no drop-path layers"):
        with_drop_path(create_backbone("tinycnn", 16, 1), 0.1)


def test_randaugment_draws_per_image_repeats_for_a_seed_and_keeps_uint8() -> None:
    images = torch.arange(16 * 16, dtype=torch.uint8).reshape(1, 16, 16, 1).repeat(12, 1, 1, 1)  # (12, 16, 16, 1)
    out = randaugment_batch(images, 15, torch.Generator().manual_seed(0))
    again = randaugment_batch(images, 15, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8 and torch.equal(out, again)
    assert len({bytes(image.numpy()) for image in out}) > 3, "identical images got identical augmentations"
    assert not torch.equal(out, randaugment_batch(images, 15, torch.Generator().manual_seed(1)))


def test_multilabel_finetune_trains_a_k_output_head_per_fraction(canvases) -> None:
    options = {**TINY, "fractions": [0.25, 1.0], "drop_path": 0.1, "randaugment": 9, "layer_decay": 0.65}
    context = EvalContext(load_target("timm:vit_nano_patch4", 16, 1), canvases, torch.device("cpu"), options)
    results = {result.metric: result for result in evaluate(context, "multilabel_finetune")}
    assert sorted(results) == ["mAP@100%", "mAP@25%", "subset_accuracy@100%", "subset_accuracy@25%"]
    settings = results["mAP@25%"].settings
    assert settings["labelled_images"] == 12 and settings["drop_path"] == 0.1 and settings["randaugment"] == 9
    assert settings["layer_decay"] == 0.65 and len(settings["per_class_ap"]) == 10
    assert all(0 <= result.value <= 100 for result in results.values())
    assert drop_path_rates(context.target.backbone) == []  # the evaluated target is never changed


def test_multilabel_finetune_learns_the_canvases_classes(canvases) -> None:
    """A random tinycnn fine-tuned for 60 steps ranks each class's canvases far above the untrained head."""
    target = load_target("timm:tinycnn", 28, 1)
    context = EvalContext(target, canvases, torch.device("cpu"), {"epochs": 1, "min_steps": 60, "batch_size": 16,
                                                                     "lr": 3e-3, "seed": 0})
    tuning = FineTuning(context)
    from pretrainlab.eval.protocols.multilabel_finetune import finetune_multilabel, test_scores

    untrained = test_scores(tuning, tuning.new_model(0, num_outputs=10))[0]
    trained = test_scores(tuning, finetune_multilabel(tuning, canvases.train.images, canvases.train.multilabels,
                                                      0))[0]
    assert trained > untrained + 10, (trained, untrained)


def test_fraction_subsets_nest_and_keep_two_images() -> None:
    small, large = random_fraction_subset(100, 0.05, 3), random_fraction_subset(100, 0.2, 3)
    assert len(small) == 5 and len(large) == 20 and set(small) <= set(large)
    assert len(random_fraction_subset(100, 0.001, 0)) == 2


@pytest.mark.parametrize("option, message", [
    ("layer_decay=1.5", "layer_decay must be a number in (0, 1]"),
    ("layer_decay=abc", "layer_decay must be a number in (0, 1]"),
    ("drop_path=1.0", "drop_path is the deepest block's drop probability"),
    ("drop_path=-0.1", "drop_path is the deepest block's drop probability"),
    ("randaugment=31", "randaugment is a magnitude, a whole number in 0..30"),
    ("randaugment=2.5", "randaugment is a magnitude, a whole number in 0..30"),
    ("fractions=[0, 0.5]", "a label fraction must be in (0, 1]"),
])
def test_bad_fine_tuning_options_exit_2_with_one_line(option: str, message: str, capsys) -> None:
    code = main(["eval", "timm:vit_nano_patch4", "--data", "composed:builtin:8", "--img-size", "16",
                 "--protocol", "multilabel_finetune", "--option", option, "--no-store"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:") and message in err, err


def test_drop_path_on_a_backbone_without_residual_blocks_exits_2(capsys) -> None:
    code = main(["eval", "timm:tinycnn", "--data", "composed:builtin:8", "--protocol", "multilabel_finetune",
                 "--option", "drop_path=0.1", "--option", "min_steps=1", "--no-store"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no drop-path layers" in err, err


def test_a_larger_randaugment_magnitude_changes_the_images_more() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(40, 216, (64, 16, 16, 1), dtype=torch.uint8, generator=generator)  # (64, 16, 16, 1)

    def mean_change(magnitude: int) -> float:
        out = randaugment_batch(images, magnitude, torch.Generator().manual_seed(0))
        return float((out.float() - images.float()).abs().mean())

    assert mean_change(2) < mean_change(28)
