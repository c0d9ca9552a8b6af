"""A number written with an exponent and no dot ("5e-4") is text to YAML 1.1 but a number to every user."""

from __future__ import annotations

import pytest
import yaml

from pretrainlab.config import build_config
from pretrainlab.errors import PretrainlabError
from pretrainlab.train.config import TrainConfig


@pytest.mark.parametrize("text, value", [("5e-4", 5e-4), ("1E3", 1000.0), ("25e-3", 0.025), (".5e1", 5.0)])
def test_exponent_numbers_read_as_text_by_yaml_become_floats(text: str, value: float) -> None:
    assert isinstance(yaml.safe_load(text), str)  # the YAML behaviour this guards against
    assert build_config(TrainConfig, {"lr": yaml.safe_load(text)}).lr == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "5e", "e-4", "5e-4x"])
def test_other_text_for_a_number_is_still_refused(text: str) -> None:
    with pytest.raises(PretrainlabError, match="must be a number"):
        build_config(TrainConfig, {"lr": text})
