"""Bad input, table-driven like a fuzz set: each case is a command line plus the files it needs.

Every case must end with exit code 2 and one line on stderr (`error: ...` saying what was wrong and what is
valid), no traceback, no invitation to unpickle (`weights_only=False`), and leave the existing run folders and
results store byte-for-byte unchanged. Classes: data, options, checkpoints and weights, output. Commands run
in-process through `pretrainlab.cli.main`; only Ctrl-C needs a process of its own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrainlab.cli import main
from pretrainlab.eval.protocols import PROTOCOLS
from pretrainlab.store import EvaluationRow, ResultsStore


class Unsafe:
    """Pickled by reference: loading it would import and call code, which weights_only refuses."""

    def __reduce__(self) -> tuple:
        return (print, ("this ran",))


@dataclass
class Workspace:
    """Files shared by all cases (built once); `case` is a fresh folder per case."""

    root: Path
    case: Path = field(default_factory=Path)

    def path(self, name: str) -> Path:
        return self.root / name

    def copy_run(self, name: str, into: str = "run") -> Path:
        target = self.case / into
        shutil.copytree(self.root / name, target)
        return target


def pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--method", "simclr", "--backbone", "tinycnn", "--data", f"npz:{data}", "--out", str(out),
            "--epochs", "2", "--batch-size", "16", "--no-progress", "--option", "hidden_dim=16",
            "--option", "projection_dim=8", *extra]


def decompression_bomb(path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def build_workspace(root: Path) -> Workspace:
    rng = np.random.default_rng(0)
    space = Workspace(root)
    np.savez(root / "tiny.npz", x_train=rng.integers(0, 256, (32, 16, 16), dtype=np.uint8))
    np.savez(root / "labelled.npz", x_train=rng.integers(0, 256, (40, 16, 16), dtype=np.uint8),
             y_train=np.arange(40) % 4)
    assert main(pretrain_args(root / "tiny.npz", root / "stopped", "--stop-after", "1")) == 130
    assert main(pretrain_args(root / "tiny.npz", root / "done")) == 0
    store = ResultsStore(root / "store" / "results.db")
    store.add_evaluations([EvaluationRow("timm:tinycnn", "sha256:0", "builtin", "knn", "top1", 50.0, 0, 0.1)])
    torch.save({"weights": Unsafe()}, root / "unsafe.pt")
    (root / "garbage.safetensors").write_bytes(os.urandom(256))
    (root / "a_file").write_text("not a folder")
    (root / "a_folder").mkdir()
    (root / "list_recipe.yaml").write_text("- method\n- simclr\n")
    (root / "broken_recipe.yaml").write_text("train: {epochs: [1, 2\n")
    npz_cases = {
        "text": np.array([["a"] * 4] * 3), "objects": np.array([{}, {}, {}], dtype=object),
        "complex": np.ones((3, 4, 4), dtype=np.complex64), "empty_float": np.zeros((0, 4, 4), dtype=np.float32),
        "nan": np.full((3, 4, 4), np.nan, dtype=np.float32), "normalised": np.full((3, 4, 4), -1.5, np.float32),
    }
    for name, images in npz_cases.items():
        np.savez(root / f"{name}.npz", x_train=images)
    bad_labels = {"nan_labels": [0.0, 1.0, np.nan], "huge_labels": [0, 1, 10**10], "neg_labels": [0, -1, 1]}
    for name, labels in bad_labels.items():
        np.savez(root / f"{name}.npz", x_train=np.zeros((3, 16, 16), dtype=np.uint8), y_train=np.array(labels))
    for name in ("dangling", "loops", "bomb"):
        (root / name / "class").mkdir(parents=True)
    (root / "dangling" / "class" / "gone.png").symlink_to(root / "nowhere.png")
    (root / "loops" / "class" / "a.png").symlink_to(root / "loops" / "class" / "b.png")
    (root / "loops" / "class" / "b.png").symlink_to(root / "loops" / "class" / "a.png")
    decompression_bomb(root / "bomb" / "class" / "big.png")
    return space


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return build_workspace(tmp_path_factory.mktemp("bad-input"))


Setup = Callable[[Workspace], dict[str, Path]]


def nothing(space: Workspace) -> dict[str, Path]:
    return {}


def stopped_run_with(checkpoint: bytes | None = None, config: str | None = None) -> Setup:
    """A copy of the stopped run whose last.pt or config.yaml is replaced (bytes: the file's new content)."""

    def setup(space: Workspace) -> dict[str, Path]:
        run = space.copy_run("stopped")
        if checkpoint is not None:
            (run / "checkpoints" / "last.pt").write_bytes(checkpoint)
        if config is not None:
            (run / "config.yaml").write_text(config)
        return {"run": run}

    return setup


def truncated_checkpoint(space: Workspace) -> dict[str, Path]:
    data = (space.path("stopped") / "checkpoints" / "last.pt").read_bytes()
    return stopped_run_with(checkpoint=data[: len(data) // 2])(space)


def unsafe_checkpoint(space: Workspace) -> dict[str, Path]:
    return stopped_run_with(checkpoint=space.path("unsafe.pt").read_bytes())(space)


def foreign_checkpoint(space: Workspace) -> dict[str, Path]:
    run = space.copy_run("stopped")
    torch.save({"method": {"other.weight": torch.ones(2)}, "optimizer": {}, "scaler": {}, "step": 1},
               run / "checkpoints" / "last.pt")
    return {"run": run}


def done_run_with_unsafe_checkpoint(space: Workspace) -> dict[str, Path]:
    run = space.copy_run("done")
    shutil.copy(space.path("unsafe.pt"), run / "checkpoints" / "last.pt")
    return {"run": run}


def done_run_with_truncated_backbone(space: Workspace) -> dict[str, Path]:
    run = space.copy_run("done")
    data = (run / "backbone.safetensors").read_bytes()
    (run / "backbone.safetensors").write_bytes(data[: len(data) // 2])
    return {"run": run}


@dataclass
class Case:
    name: str
    argv: list[str]
    message: str
    setup: Setup = nothing


def P(*extra: str, data: str = "npz:{tiny}", out: str = "{case}/new", method: str = "simclr") -> list[str]:  # noqa: N802
    """A pre-training command line (placeholders in braces are filled per case)."""
    return ["pretrain", "--method", method, "--backbone", "tinycnn", "--data", data, "--out", out,
            "--epochs", "2", "--batch-size", "16", "--no-progress", "--option", "hidden_dim=16", *extra]


def E(*extra: str, backbone: str = "timm:tinycnn", data: str = "npz:{labelled}") -> list[str]:  # noqa: N802
    """An evaluation command line that records into the watched store."""
    return ["eval", backbone, "--data", data, "--store", "{store}", *extra]


RESUME = P("--resume", out="{run}")
CASES = [
    # -- data ------------------------------------------------------------------------------------------------
    Case("npz-text", P(data="npz:{root}/text.npz"), "holds <U1 values; images must be uint8"),
    Case("npz-objects", P(data="npz:{root}/objects.npz"), "holds Python objects, which are never unpickled"),
    Case("npz-complex", P(data="npz:{root}/complex.npz"), "holds complex64 values"),
    Case("npz-float-no-images", P(data="npz:{root}/empty_float.npz"), "holds no images"),
    Case("npz-nan-images", E(data="npz:{root}/nan.npz"), "NaN or infinite pixels"),
    Case("npz-normalised-floats", P(data="npz:{root}/normalised.npz"), "spans -1.5..-1.5"),
    Case("npz-nan-labels", E(data="npz:{root}/nan_labels.npz"), "label 2 is nan (NaN or infinite"),
    Case("npz-huge-labels", E(data="npz:{root}/huge_labels.npz"), "label 2 is 10000000000 (absurdly large"),
    Case("npz-negative-labels", E(data="npz:{root}/neg_labels.npz"), "label 1 is -1 (negative"),
    Case("folder-dangling-symlinks", P(data="folder:{root}/dangling"), "(dangling symlink)"),
    Case("folder-symlink-loops", E(data="folder:{root}/loops"), "(symlink loop)"),
    Case("folder-only-a-decompression-bomb", E(data="folder:{root}/bomb"), "none of the 1 image files"),
    # -- options ---------------------------------------------------------------------------------------------
    Case("option-malformed-yaml", P("--option", "temperature=[1,"), "option temperature: cannot read '[1,'"),
    Case("option-wrong-type", P("--option", "temperature=abc"), "option simclr.temperature must be a number"),
    Case("option-out-of-range", P("--option", "temperature=0"), "invalid simclr options: temperature must be > 0"),
    Case("option-scalar-for-group", P("--option", "views=3"), "option simclr.views is a group of options"),
    Case("option-list-length", P("--option", "global_crop_scale=[0.2]", method="swav"),
         "option swav.global_crop_scale must be a list of 2 values"),
    Case("recipe-is-a-list", P("--recipe", "{root}/list_recipe.yaml"), "holds a list; a recipe is a YAML mapping"),
    Case("recipe-broken-yaml", P("--recipe", "{root}/broken_recipe.yaml"), "cannot read it as YAML"),
    Case("pretrain-img-size-0", P("--img-size", "0"), "--img-size: must be a whole number >= 1, got '0'"),
    Case("pretrain-epochs-text", P("--epochs", "many"), "argument --epochs: invalid int value"),
    Case("eval-unknown-option", E("--option", "kk=5"), "option 'kk' is read by none of the protocols knn; "
         "did you mean 'k'?"),
    Case("eval-option-of-another-protocol", E("--protocol", "linear", "--option", "k=5"),
         "option 'k' is read by none of the protocols linear"),
    Case("eval-img-size-0", E("--img-size", "0"), "--img-size: must be a whole number >= 1"),
    Case("eval-k-negative", E("--k", "-5"), "--k: must be a whole number >= 1, got '-5'"),
    Case("eval-k-zero", E("--k", "0"), "--k: must be a whole number >= 1, got '0'"),
    Case("eval-option-k-zero", E("--option", "k=0"), "kNN k must be a whole number >= 1"),
    Case("eval-option-temperature-text", E("--option", "temperature=abc"), "kNN temperature must be a number > 0"),
    Case("gauntlet-unknown-option", ["gauntlet", "timm:tinycnn", "--data", "npz:{labelled}", "--store", "{store}",
                                     "--option", "speed_batchsize=4"], "did you mean 'speed_batch_size'?"),
    # -- checkpoints and weights -----------------------------------------------------------------------------
    Case("checkpoint-truncated", RESUME, "checkpoint", truncated_checkpoint),
    Case("checkpoint-empty", RESUME, "is damaged, truncated or not a torch file",
         stopped_run_with(checkpoint=b"")),
    Case("checkpoint-garbage", RESUME, "last.pt is not a safe file",
         stopped_run_with(checkpoint=b"\x80\x02not a checkpoint " * 24)),
    Case("checkpoint-pickle", RESUME, "last.pt is not a safe file", unsafe_checkpoint),
    Case("checkpoint-of-another-model", RESUME, "does not fit this run's method",
         foreign_checkpoint),
    Case("config-yaml-garbage", RESUME, "config.yaml is not readable YAML",
         stopped_run_with(config="method: [simclr\n")),
    Case("config-yaml-a-list", RESUME, "is not a pretrainlab run configuration",
         stopped_run_with(config="- simclr\n")),
    Case("config-yaml-wrong-type", RESUME, "option train.epochs must be a whole number",
         stopped_run_with(config="method: simclr\nbackbone: tinycnn\ntrain: {epochs: two}\n")),
    Case("weights-pickle", E("--weights", "{root}/unsafe.pt"), "weights file {root}/unsafe.pt is not a safe file"),
    Case("weights-garbage-safetensors", E("--weights", "{root}/garbage.safetensors"),
         "is not a readable safetensors file"),
    Case("weights-missing", E("--weights", "{root}/missing.pt"), "weights file not found"),
    Case("exported-file-garbage", E(backbone="{root}/garbage.safetensors"), "is not a readable safetensors file"),
    Case("run-backbone-truncated", E(backbone="{run}"), "is not a readable safetensors file",
         done_run_with_truncated_backbone),
    Case("head-checkpoint-pickle", E(backbone="{run}@head.0"), "checkpoint {run}/checkpoints/last.pt is not a safe",
         done_run_with_unsafe_checkpoint),
    Case("ssld-teacher-pickle", P("--option", "teacher=timm:tinycnn", "--option", "teacher_weights={root}/unsafe.pt",
                                  method="ssld"), "teacher weights {root}/unsafe.pt is not a safe file"),
    # -- output ----------------------------------------------------------------------------------------------
    Case("out-is-a-file", P(out="{root}/a_file"), "--out {root}/a_file is a file; give a folder path"),
    Case("out-under-a-file", P(out="{root}/a_file/run"), "lies under the file {root}/a_file"),
    Case("out-not-writable", P(out="/sys/pretrainlab-run"), "cannot write into /sys"),
    Case("out-holds-a-finished-run", P(out="{root}/done"), "already holds a run"),
    Case("compare-html-is-a-folder", ["compare", "--store", "{store}", "--html", "{root}/a_folder"],
         "--html {root}/a_folder is a folder; give a file path"),
    Case("compare-html-under-a-file", ["compare", "--store", "{store}", "--html", "{root}/a_file/page.html"],
         "lies under the file"),
    Case("export-out-is-a-folder", ["export", "{root}/done", "--out", "{root}/a_folder"], "is a folder"),
]


def folder_hashes(*folders: Path) -> dict[str, str]:
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case: Case, space: Workspace, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if case.name == "out-not-writable" and not Path("/sys").is_dir():
        pytest.skip("needs a read-only /sys")
    monkeypatch.chdir(tmp_path)
    space.case = tmp_path
    places = {"root": space.root, "case": tmp_path, "tiny": space.path("tiny.npz"),
              "labelled": space.path("labelled.npz"), "store": space.path("store") / "results.db",
              **case.setup(space)}
    argv = [arg.format(**places) for arg in case.argv]
    message = case.message.format(**places)
    watched = [space.path("stopped"), space.path("done"), space.path("store"), places.get("run", tmp_path)]
    before = folder_hashes(*watched)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "weights_only" not in err, err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert folder_hashes(*watched) == before, "an existing run folder or the store changed"
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_every_protocol_declares_the_options_it_reads() -> None:
    """Undeclared protocols accept any option (so a new one is never blocked): every registered one declares."""
    assert [name for name in PROTOCOLS.names() if getattr(PROTOCOLS.get(name), "options", None) is None] == []


def test_an_option_for_knn_is_used_not_dropped(space: Workspace, capsys: pytest.CaptureFixture) -> None:
    code = main(["eval", "timm:tinycnn", "--data", f"npz:{space.path('labelled.npz')}", "--option", "k=5", "--json",
                 "--no-store"])
    out = capsys.readouterr().out
    assert code == 0 and '"k": 5' in out


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches /proc/PID/maps")
def test_ctrl_c_before_training_starts_is_one_line_and_exit_130(tmp_path: Path) -> None:
    data = tmp_path / "tiny.npz"
    np.savez(data, x_train=np.zeros((32, 16, 16), dtype=np.uint8))
    command = [sys.executable, "-m", "pretrainlab", *pretrain_args(data, tmp_path / "run")]
    # A test run started in the background (`pytest ... &`) inherits SIGINT ignored, and Python then keeps it
    # ignored: the command is given the default disposition, as a terminal would.
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    # Ctrl-C while torch's libraries load: inside the command, long before the first training step.
    while time.monotonic() < deadline and process.poll() is None:
        if "libtorch" in Path(f"/proc/{process.pid}/maps").read_text():
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines() == ["interrupted (Ctrl-C)"], err[-2000:]
