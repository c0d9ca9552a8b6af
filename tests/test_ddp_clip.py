"""`torchrun --nproc_per_node 2 ... --method clip` trains on captions with DDP and leaves the text tower beside
the backbone (each rank draws its slice's captions; the loss gathers embeddings, see test_clip_loss.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pretrainlab.backbones.text.tower import load_text_tower


def test_torchrun_two_processes_clip(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pretrainlab", "pretrain", "--method", "clip", "--backbone", "tinycnn",
               "--data", "captions:composed:builtin:40", "--img-size", "28", "--epochs", "2", "--batch-size", "16",
               "--out", str(out), "--no-progress", "--log-every", "1", "--option", "text_width=16",
               "--option", "text_depth=1", "--option", "embed_dim=8"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # 40 canvases / 16 = 2 steps an epoch
    tower, extra, _ = load_text_tower(out / "text_tower.safetensors")
    assert (out / "backbone.safetensors").exists() and extra["image_projection.weight"].shape == (8, 128)
