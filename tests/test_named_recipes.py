"""Packaged recipes by name: `--recipe mae_small_data` (arXiv 2210.12843's small-data MAE settings)."""

from __future__ import annotations

from pathlib import Path

from pretrainlab.cli import main
from pretrainlab.pipeline import build_run_config


def test_mae_small_data_recipe_masks_90_percent_and_crops_mildly(tmp_path: Path) -> None:
    config = build_run_config("mae", {"out": str(tmp_path / "run")}, {}, {}, Path("mae_small_data"))
    assert config.method_options["mask_ratio"] == 0.9 and config.method_options["crop_min_scale"] == 0.5
    assert config.train.optimizer == "adamw"
    override = build_run_config("mae", {"out": str(tmp_path / "run")}, {}, {"mask_ratio": 0.8},
                                Path("mae_small_data"))
    assert override.method_options["mask_ratio"] == 0.8  # flags still win over the named recipe


def test_a_named_recipe_of_the_wrong_method_or_an_unknown_name_exits_2(tmp_path: Path, capsys) -> None:
    base = ["pretrain", "--data", "builtin", "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert main([*base, "--method", "simclr", "--recipe", "mae_small_data"]) == 2
    assert "recipe is for method 'mae', not 'simclr'" in capsys.readouterr().err
    assert main([*base, "--method", "mae", "--recipe", "mae_smal_data"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "packaged recipe name" in err and "mae_small_data" in err, err
    assert not (tmp_path / "run").exists()
