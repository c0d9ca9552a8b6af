"""`--img-size` other than the data's own size, end to end (every method at another size: test_methods_registry.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrainlab.cli import main


def test_pretrain_at_another_img_size_and_an_architecture_that_cannot_take_it(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """MAE at 32 px on 28 px data trains and leaves its 32 px grid; convnext_atto at 28 px is a one-line refusal
    (a 1x1 map before its last 2x2 downsampling), exit 2, not a traceback."""
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.integers(0, 255, (48, 28, 28), dtype=np.uint8), y_train=np.arange(48) % 4)
    base = ["pretrain", "--data", f"npz:{data}", "--epochs", "1", "--batch-size", "16", "--no-progress",
            "--knn-every", "0"]
    code = main([*base, "--method", "mae", "--backbone", "vit_nano_patch4", "--img-size", "32",
                 "--out", str(tmp_path / "mae"), "--option", "decoder_dim=16", "--option", "decoder_depth=1",
                 "--option", "decoder_heads=2"])
    assert code == 0, capsys.readouterr().err[-2000:]
    assert Image.open(tmp_path / "mae" / "reconstructions.png").size[1] == 3 * 33 + 1  # rows of 32 px images
    capsys.readouterr()
    code = main([*base, "--method", "simclr", "--backbone", "convnext_atto", "--img-size", "28",
                 "--out", str(tmp_path / "convnext")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err
    assert len(lines) == 1 and "cannot take 28x28 images" in lines[0], err
