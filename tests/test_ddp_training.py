"""`torchrun --nproc_per_node 2 -m pretrainlab pretrain ...` trains with DDP on CPU (gloo) and leaves one run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def test_torchrun_two_processes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=rng.integers(0, 255, (64, 16, 16), dtype=np.uint8), y_train=np.arange(64) % 4)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pretrainlab", "pretrain", "--method", "simclr", "--backbone", "tinycnn", "--data", f"npz:{data}",
               "--epochs", "2", "--batch-size", "16", "--out", str(out), "--no-progress", "--log-every", "1",
               "--option", "hidden_dim=16", "--option", "projection_dim=8"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "backbone.safetensors").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    # 52 training images (the stratified split keeps 12 for testing) / global batch 16 = 3 steps an epoch.
    assert steps == list(range(1, 7)), "only rank 0 logs, one line per global step"
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["resolved"]["world_size"] == 2
