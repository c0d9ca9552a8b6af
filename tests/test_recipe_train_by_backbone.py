"""A recipe's `train_by_backbone` settings apply to that backbone only, and the user's flags still win (issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrainlab.errors import PretrainlabError
from pretrainlab.pipeline import build_run_config

RECIPE = """method: swav
backbone: resnet18_cifar
train:
  optimizer: lars
  lars_trust: 0.02
  lr: 0.6
train_by_backbone:
  resnet18: {lars_trust: 0.001}
"""


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "swav.yaml"
    path.write_text(RECIPE)
    return path


@pytest.mark.parametrize("backbone, trust", [("resnet18", 0.001), ("tinycnn", 0.02), (None, 0.02)])
def test_the_chosen_backbones_settings_replace_the_recipes(recipe: Path, backbone: str | None, trust: float) -> None:
    config = build_run_config("swav", {"backbone": backbone}, {}, {}, recipe=recipe)
    assert config.train.lars_trust == trust and config.train.lr == 0.6  # the rest of the recipe stands


def test_the_users_flag_wins_over_the_backbones_setting(recipe: Path) -> None:
    config = build_run_config("swav", {"backbone": "resnet18"}, {"lars_trust": 0.005}, {}, recipe=recipe)
    assert config.train.lars_trust == 0.005


@pytest.mark.parametrize("value", ["[resnet18]", "{resnet18: 0.001}"])
def test_a_malformed_entry_is_one_clear_error(tmp_path: Path, value: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(RECIPE.split("train_by_backbone")[0] + f"train_by_backbone: {value}\n")
    with pytest.raises(PretrainlabError, match="train_by_backbone must map backbone names to train settings"):
        build_run_config("swav", {"backbone": "resnet18"}, {}, {}, recipe=path)


def test_an_unknown_setting_for_a_backbone_is_refused_like_any_train_setting(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(RECIPE.replace("{lars_trust: 0.001}", "{lars_trsut: 0.001}"))
    with pytest.raises(PretrainlabError, match="lars_trsut"):
        build_run_config("swav", {"backbone": "resnet18"}, {}, {}, recipe=path)


@pytest.mark.parametrize("method", ["barlowtwins", "vicreg", "swav"])
@pytest.mark.parametrize("backbone, trust", [("tinycnn", 0.02), ("resnet18", 0.001), (None, 0.001)])
def test_the_packaged_lars_recipes_keep_solo_learns_trust_for_the_tiny_cnn_only(method: str, backbone: str | None,
                                                                                 trust: float) -> None:
    config = build_run_config(method, {"backbone": backbone}, {}, {})
    assert (config.train.optimizer, config.train.lars_trust) == ("lars", trust)
