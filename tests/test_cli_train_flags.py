"""`pretrainlab pretrain`'s interval and count flags: a negative (or otherwise meaningless) value is one error line,
exit code 2, before the run folder is created (`--filters-every -1` used to train with the monitor on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrainlab.cli import main
from pretrainlab.errors import PretrainlabError
from pretrainlab.train.config import TrainConfig


@pytest.mark.parametrize("flag, value, message", [
    ("--filters-every", "-1", "--filters-every (train.filters_every) must be >= 0 (0: off"),
    ("--knn-every", "-1", "--knn-every (train.knn_every) must be >= 0"),
    ("--checkpoint-every", "-2", "--checkpoint-every (train.checkpoint_every) must be >= 0"),
    ("--stop-after", "-1", "--stop-after (train.stop_after) must be >= 0"),
    ("--log-every", "0", "--log-every (train.log_every) must be >= 1"),
    ("--workers", "-1", "--workers (train.workers) must be >= 0"),
    ("--shuffle-buffer", "-5", "--shuffle-buffer (train.shuffle_buffer) must be >= 0"),
    ("--grad-clip", "-1", "--grad-clip (train.grad_clip) must be >= 0"),
    ("--seed", "-3", "--seed (train.seed) must be >= 0"),
    ("--momentum", "1.5", "--momentum (train.momentum) must be in [0, 1)"),
    ("--min-lr", "-0.1", "--min-lr (train.min_lr) must be >= 0"),
])
def test_bad_interval_is_one_line_and_exit_code_2(flag: str, value: str, message: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = main(["pretrain", "--method", "simclr", "--backbone", "tinycnn", "--data", "builtin", "--epochs", "1",
                 "--out", str(out), flag, value])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_zero_keeps_its_documented_meaning() -> None:
    """0 stays valid where it means something (off, once per epoch, never); a recipe's value is checked too."""
    config = TrainConfig(filters_every=0, knn_every=0, checkpoint_every=0, stop_after=0, workers=0, grad_clip=0.0)
    assert config.filters_every == 0 and config.log_every == 10
    with pytest.raises(PretrainlabError, match="train.prefetch must be >= 0"):
        TrainConfig(prefetch=-1)


@pytest.mark.parametrize("args", [
    ["explain", "timm:tinycnn", "--what", "filters", "--images", "-1"],
    ["explain", "timm:tinycnn", "--what", "cam", "--batch-size", "0"],
    ["explain", "timm:tinycnn", "--what", "cam", "--probe-images", "0"],
    ["explain", "timm:tinycnn", "--what", "cam", "--seed", "-1"],
    ["attack", "timm:tinycnn", "--img-size", "0"],
    ["attack", "timm:tinycnn", "--seed", "-1"],
    ["attack", "timm:tinycnn", "--max-test", "0"],
    ["eval", "timm:tinycnn", "--seed", "-1"],
])
def test_sibling_counts_of_other_commands_are_checked_by_the_parser(args: list[str],
                                                                    capsys: pytest.CaptureFixture) -> None:
    """The same hole in explain / attack / eval (gauntlet's --seeds was already checked by the library):
    `attack --img-size 0` printed 0.00 % with exit 0, `attack --seed -1` ended in numpy's traceback; now the
    parser refuses them before any work."""
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "must be a whole number >=" in err, err
