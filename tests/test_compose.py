"""Composed multi-task pre-training: weighted loss sum, one shared backbone, option namespaces, clear errors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.config import build_config
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError, UnknownNameError
from pretrainlab.methods import METHODS, MethodContext
from pretrainlab.pipeline import build_run_config, pretrain
from pretrainlab.train.optim import parameter_groups

NAME = "compose:mae+simclr+supervised"
CONTEXT = MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=10)


def tiny_composition(weights: dict[str, float] | None = None):  # noqa: ANN201
    method_class = METHODS.get(NAME)
    options = {**method_class.example_options, "weights": weights or {}}
    config = build_config(method_class.config_class, options, NAME)
    return method_class(create_backbone("vit_nano_patch4", 32, 3), config, CONTEXT).train()


def test_loss_is_the_weighted_sum_of_members_computed_separately(rgb_batch: torch.Tensor) -> None:
    weights = {"mae": 0.5, "simclr": 2.0, "supervised": 0.25}
    composed = tiny_composition(weights)
    labels = torch.arange(16) % 10
    outputs = composed(composed.prepare_batch(rgb_batch, labels, torch.Generator().manual_seed(0)))

    # Standalone methods with the same weights, fed the same seed in the same order.
    generator = torch.Generator().manual_seed(0)
    standalone = {}
    for member in composed.members:
        method_class = METHODS.get(member)
        method = method_class(copy.deepcopy(composed.backbone), getattr(composed.config, member), CONTEXT).train()
        method.load_state_dict(composed.member_methods[member].state_dict())
        standalone[member] = method
    batches = {m: method.prepare_batch(rgb_batch, labels, generator) for m, method in standalone.items()}
    losses = {m: standalone[m](batches[m])["loss"] for m in composed.members}
    expected = sum(weights[m] * losses[m] for m in composed.members)
    torch.testing.assert_close(outputs["loss"], expected)
    for member in composed.members:
        torch.testing.assert_close(outputs[f"{member}/loss"], losses[member].detach())


def test_members_share_one_backbone(rgb_batch: torch.Tensor) -> None:
    composed = tiny_composition()
    assert all(method.backbone is composed.backbone for method in composed.member_methods.values())
    names = [name for name, _ in composed.named_parameters()]
    backbone_count = sum(1 for _ in composed.backbone.parameters())
    assert sum(name.startswith("backbone.") for name in names) == backbone_count
    assert not any(".backbone." in name for name in names), "the backbone is listed (and optimised) once"
    grouped = sum(len(group["params"]) for group in parameter_groups(composed, 0.05))
    assert grouped == len(names)
    batch = composed.prepare_batch(rgb_batch, torch.arange(16) % 10, torch.Generator().manual_seed(1))
    composed.member_methods["simclr"](batch.extra["members"]["simclr"])["loss"].backward()
    weight = composed.backbone.model.patch_embed.proj.weight
    assert weight.grad is not None and float(weight.grad.abs().sum()) > 0


def test_options_are_namespaced_by_member() -> None:
    config = build_run_config(NAME, {"backbone": "vit_nano_patch4"}, {},
                              {"weights.mae": 0.3, "mae.mask_ratio": 0.6, "simclr.temperature": 0.2})
    options = config.method_options
    assert options["weights"]["mae"] == 0.3 and options["mae"]["mask_ratio"] == 0.6
    assert options["simclr"]["temperature"] == 0.2
    assert options["simclr"]["hidden_dim"] == 512  # from the packaged recipes/compose.yaml
    assert config.train.optimizer == "adamw"
    with pytest.raises(PretrainlabError, match="bogus"):
        build_run_config(NAME, {}, {}, {"mae.bogus": 1})
    with pytest.raises(PretrainlabError, match="byol"):
        build_run_config(NAME, {}, {}, {"weights.byol": 1.0})
    other = build_run_config("compose:mae+rotnet", {"backbone": "vit_nano_patch4"}, {}, {})
    assert other.method_options == {} and other.train.optimizer == "sgd"  # no recipe: defaults


@pytest.mark.parametrize(("name", "message"), [
    ("compose:mae+simclrr", "did you mean 'simclr'"),
    ("compose:mae+mae", "more than once"),
    ("compose:mae", "two or more"),
    ("compose:mae+", "two or more"),
    ("compose:mae+compose:simclr", "do not nest"),
])
def test_bad_compositions_fail_clearly(name: str, message: str) -> None:
    with pytest.raises(PretrainlabError, match=message):
        METHODS.get(name)


def test_unknown_member_is_an_unknown_name() -> None:
    with pytest.raises(UnknownNameError, match="in 'compose:rotnet\\+nope'"):
        METHODS.get("compose:rotnet+nope")


def test_token_member_needs_a_vit() -> None:
    method_class = METHODS.get(NAME)
    config = build_config(method_class.config_class, {}, NAME)
    with pytest.raises(PretrainlabError, match="member\\(s\\) mae work on patch tokens"):
        method_class(create_backbone("tinycnn", 32, 3), config, CONTEXT)
    assert not METHODS.get("compose:simclr+rotnet").needs_tokens


def test_weight_decay_follows_each_member() -> None:
    composed = tiny_composition()
    parameters = dict(composed.named_parameters())
    mask_token = "member_methods.mae.decoder.mask_token"
    assert composed.excluded_from_weight_decay(mask_token, parameters[mask_token])
    linear = "member_methods.supervised.classifier.weight"
    assert not composed.excluded_from_weight_decay(linear, parameters[linear])


def test_composition_pretrains_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    source = ImageSource("memory", ImageSet(rng.integers(0, 256, (32, 16, 16, 1), dtype=np.uint8),
                                            np.arange(32) % 4))
    config = build_run_config("compose:mae+rotnet", {"backbone": "vit_nano_patch4", "out": str(tmp_path / "run")},
                              {"epochs": 1, "batch_size": 16, "device": "cpu", "warmup_epochs": 0},
                              {"weights.rotnet": 0.5, "mae.decoder_dim": 32, "mae.decoder_heads": 2,
                               "rotnet.hidden_dim": 16})
    summary = pretrain(config, source=source, show_progress=False)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    assert (tmp_path / "run" / "reconstructions.png").exists(), "the MAE member's grid is saved"
