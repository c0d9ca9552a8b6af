"""DenseCLIP probe: pixel-text score maps against a per-pixel loop, the text-initialised head against the
margin rule it encodes, and the protocol end to end (metrics, gain, one-line errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrainlab.backbones.text.tower import TextTower
from pretrainlab.cli import main
from pretrainlab.data import load_source
from pretrainlab.eval.image_text import ImageTextModel
from pretrainlab.eval.protocols.denseclip import (
    background_margin,
    class_margin,
    score_maps,
    standardise,
    text_initialised_head,
)
from pretrainlab.pipeline import build_run_config, evaluate_backbone, untrained_run


class Identity:
    embed_dim = 3
    name = "identity"

    def encode(self, texts: list[str], device: torch.device | None = None) -> torch.Tensor:
        return torch.eye(3)[[int(t) for t in texts]]


def test_score_maps_match_a_per_pixel_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    projection = torch.randn(3, 5, generator=generator)
    model = ImageTextModel(TextTower(Identity(), 3), projection, 10.0)
    maps = torch.randn(2, 5, 3, 4, generator=generator)
    texts = F.normalize(torch.randn(4, 3, generator=generator), dim=1)
    scores = score_maps(model, maps, texts, batch_size=1)
    assert scores.shape == (2, 4, 3, 4)
    for n, y, x in ((0, 0, 0), (1, 2, 3), (0, 1, 2)):
        pixel = F.normalize(projection @ maps[n, :, y, x], dim=0)
        torch.testing.assert_close(scores[n, :, y, x], texts @ pixel)


def test_text_initialised_head_is_the_margin_rule() -> None:
    generator = torch.Generator().manual_seed(1)
    train, test = torch.rand(6, 3, 4, 4, generator=generator), torch.rand(2, 3, 4, 4, generator=generator)
    features = torch.randn(2, 5, 4, 4, generator=generator)
    masks = np.zeros((6, 4, 4), dtype=np.uint8)
    masks[:, :2] = 1  # half the training pixels are objects
    margin = background_margin(train, masks)
    assert float((class_margin(train) < margin).float().mean()) == pytest.approx(0.5, abs=0.07)
    _, scaled_test, mean, std = standardise(train, test)
    head = text_initialised_head(5, mean, std, 7.0, margin, (4, 4)).eval()
    with torch.no_grad():
        predicted = head(torch.cat([features, scaled_test], 1)).argmax(dim=1)  # (2, 4, 4); features ignored
    rule = torch.where(class_margin(test) < margin, 0, test.argmax(dim=1) + 1)
    assert torch.equal(predicted, rule)


def test_denseclip_protocol_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = "composed:builtin:24"
    source = load_source(data)
    config = build_run_config("clip", {"backbone": "tinycnn", "data": f"captions:{data}", "img_size": 28,
                                       "out": str(tmp_path / "clip")}, {"seed": 0},
                              {"text_width": 16, "text_depth": 1, "embed_dim": 8})
    run = untrained_run(config, load_source(f"captions:{data}"))
    options = {"img_size": 28, "dense_epochs": 1, "dense_min_steps": 5}
    results = {r.metric: r.value for r in evaluate_backbone(str(run), data, ["denseclip"], options=options,
                                                            source=source)}
    assert set(results) == {"mIoU", "pixel_accuracy", "zero_shot_mIoU", "plain_mIoU", "gain_mIoU"}
    assert results["gain_mIoU"] == pytest.approx(results["mIoU"] - results["plain_mIoU"])
    assert all(0 <= results[m] <= 100 for m in ("mIoU", "zero_shot_mIoU", "plain_mIoU"))
    assert main(["eval", str(run), "--data", "builtin", "--protocol", "denseclip", "--no-store"]) == 2
    assert "masks" in capsys.readouterr().err
    assert main(["eval", "timm:tinycnn", "--data", data, "--protocol", "denseclip", "--no-store"]) == 2
    error = capsys.readouterr().err.strip()
    assert "text tower" in error and "\n" not in error
