"""Ctrl-C during `pretrainlab pretrain` saves a checkpoint and exits 130; `--resume` finishes the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def test_sigint_then_resume(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=rng.integers(0, 255, (64, 16, 16), dtype=np.uint8))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pretrainlab", "pretrain", "--method", "simclr", "--backbone", "tinycnn",
               "--data", f"npz:{data}", "--epochs", "30", "--batch-size", "16", "--out", str(out), "--no-progress",
               "--log-every", "1", "--option", "hidden_dim=16"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "checkpoints" / "last.pt").exists():
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "--resume" in stderr and "Traceback" not in stderr
    assert not (out / "backbone.safetensors").exists()
    resumed = subprocess.run([*command[:command.index("--epochs")], "--out", str(out), "--resume", "--no-progress"],
                             capture_output=True, text=True, env=environment, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "backbone.safetensors").exists()
