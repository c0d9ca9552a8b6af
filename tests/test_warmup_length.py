"""The default warm-up: a tenth of the run, but never a ramp of a few dozen steps (issue 9), and an explicit
length always wins."""

from __future__ import annotations

import pytest

from pretrainlab.errors import PretrainlabError
from pretrainlab.pipeline import build_run_config
from pretrainlab.train.config import TrainConfig


@pytest.mark.parametrize("epochs, steps_per_epoch, min_steps, expected", [
    (100, 200, 0, 10.0),      # a tenth of the run
    (300, 200, 0, 10.0),      # at most 10 epochs
    (100, 200, 100, 10.0),    # the tenth (2,000 steps) is already longer than the floor
    (30, 31, 100, 100 / 31),  # builtin at batch 128: 3 epochs would be 93 steps; the floor makes it 100
    (20, 15, 100, 20 / 3),    # the floor (6.7 epochs) meets the cap: at most a third of the run
    (3, 15, 100, 1.0),        # a 3-epoch run stays mostly at its full rate
])
def test_default_warmup_is_a_tenth_of_the_run_with_a_floor_in_steps(epochs: int, steps_per_epoch: int,
                                                                     min_steps: int, expected: float) -> None:
    config = TrainConfig(epochs=epochs, warmup_min_steps=min_steps)
    assert config.resolved_warmup_epochs(steps_per_epoch) == pytest.approx(expected)


def test_an_explicit_warmup_overrides_the_floor() -> None:
    assert TrainConfig(epochs=20, warmup_epochs=0.5, warmup_min_steps=100).resolved_warmup_epochs(15) == 0.5


def test_simclr_recipe_sets_the_rate_and_the_floor_and_a_flag_still_overrides_them() -> None:
    recipe = build_run_config("simclr", {"data": "builtin"}, {}, {}).train
    assert (recipe.lr, recipe.warmup_min_steps, recipe.warmup_epochs) == (0.6, 100, None)
    flagged = build_run_config("simclr", {"data": "builtin"}, {"lr": 0.1, "warmup_epochs": 2.0}, {}).train
    assert (flagged.lr, flagged.resolved_warmup_epochs(15)) == (0.1, 2.0)


def test_a_negative_floor_is_refused_with_what_it_means() -> None:
    with pytest.raises(PretrainlabError, match=r"train.warmup_min_steps must be >= 0 \(0: a tenth of the run"):
        TrainConfig(warmup_min_steps=-1)


def test_the_report_shows_the_resolved_warmup_not_the_recipe_default() -> None:
    from pretrainlab.report.training_section import warmup_text

    resolved = {"warmup_epochs": 6.667, "warmup_steps": 100}
    assert warmup_text({"warmup_epochs": None}, resolved) == "6.667 epochs (100 steps)"
    assert warmup_text({"warmup_epochs": 1.0}, {}) == "1 epochs"
