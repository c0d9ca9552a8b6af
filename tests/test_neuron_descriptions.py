"""Neuron descriptions: PMI picks the object a channel fires on, and agreement is measured on held-out masks."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.cli import main
from pretrainlab.language.neuron_descriptions import agreement, class_fractions, describe_neurons


def canvases(count: int, generator: torch.Generator) -> torch.Tensor:
    """Masks (N, 8, 8): class c + 1 in a random quadrant, for 3 classes, on an empty background."""
    masks = torch.zeros(count, 8, 8, dtype=torch.uint8)
    for index in range(count):
        for c in range(3):
            if torch.rand(1, generator=generator) < 0.5:
                row, col = divmod(int(torch.randint(0, 4, (1,), generator=generator)), 2)
                masks[index, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4] = c + 1
    return masks


def channels_on_objects(masks: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """Maps (N, 4, 4, 4): channel c fires where class (2 - c) lies; channel 3 is noise only."""
    fractions = class_fractions(masks, 3, (4, 4))  # (N, 3, 4, 4)
    maps = torch.cat([fractions.flip(1), torch.zeros_like(fractions[:, :1])], dim=1)
    return maps + noise * torch.rand(maps.shape, generator=generator)


def test_descriptions_name_the_object_under_each_channel() -> None:
    generator = torch.Generator().manual_seed(0)
    names = ["3", "7", "ankle boot"]
    train, test = canvases(120, generator), canvases(60, generator)
    described, cutoffs = describe_neurons(channels_on_objects(train, 0.1, generator), train, names, quantile=0.9)
    assert [d.description for d in described[:3]] == ["ankle boot", "7", "3"]
    assert all(d.pmi > 0.5 and d.coverage > 0.6 for d in described[:3])
    mean, chance = agreement(described, channels_on_objects(test, 0.1, generator), test, names, cutoffs)
    assert all(d.agreement > 40 for d in described[:3]) and described[3].agreement < 25
    assert mean > chance + 15


def test_describe_neurons_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["describe-neurons", "timm:tinycnn", "--data", "composed:builtin:40", "--top", "3"]) == 0
    output = capsys.readouterr().out
    assert "held-out IoU" in output and "mean agreement" in output
    assert main(["describe-neurons", "timm:tinycnn", "--data", "builtin"]) == 2
