"""Two "nodes" on one machine: two torchrun launchers (c10d rendezvous, 1 process each, gloo), with --strategy fsdp.

The first steps' losses equal a 1-process run on the same global batch; killing one node's worker makes the
other stop with one clear error line (not a hang); relaunching both with --resume finishes the run from the
last (sharded) checkpoint and exports one backbone.safetensors.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pretrainlab.backbones import load_backbone
from pretrainlab.cli import main

IDENTITY_VIEWS = ["--option", "views.crop_min_scale=1.0", "--option", "views.flip_p=0.0",
                  "--option", "views.jitter_strength=0.0", "--option", "views.grayscale_p=0.0"]


def _port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def _pretrain_args(data: Path, out: Path) -> list[str]:
    return ["-m", "pretrainlab", "pretrain", "--method", "simclr", "--backbone", "tinycnn", "--data", f"npz:{data}",
            "--epochs", "20", "--batch-size", "16", "--lr", "0.5", "--warmup-epochs", "0", "--out", str(out),
            "--no-progress", "--log-every", "1", "--checkpoint-every", "3", "--sync-batchnorm", "--strategy", "fsdp",
            "--dist-timeout", "60", "--no-channels-last", "--option", "hidden_dim=16", "--option", "projection_dim=8",
            *IDENTITY_VIEWS]


def _node(node_rank: int, port: int, args: list[str], env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node_rank),
               "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
               "--rdzv_id", "pretrainlab-test", "--max_restarts", "0", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _checkpointed(run: Path) -> bool:
    return (run / "checkpoints" / "last.pt").exists() and len(_losses(run)) >= 4


def test_two_nodes_match_one_process_survive_a_killed_worker_and_resume(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=rng.integers(0, 255, (48, 12, 12, 3), dtype=np.uint8))  # unlabelled: no split
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The 1-process reference runs in this process: a third interpreter start would cost more than its steps.
    assert main([*_pretrain_args(data, tmp_path / "single")[2:], "--stop-after", "3"]) == 130

    port, run = _port(), tmp_path / "two-nodes"
    nodes = [_node(rank, port, _pretrain_args(data, run), env) for rank in (0, 1)]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (run.exists() and _checkpointed(run)):
        time.sleep(0.05)
    assert _checkpointed(run), nodes[0].stderr.read()[-3000:] if nodes[0].poll() is not None else "no checkpoint"
    workers = _children(nodes[1].pid)
    assert workers, "node 1's worker process"
    os.kill(workers[0], signal.SIGKILL)  # node 1's worker dies mid-run
    outputs = [node.communicate(timeout=120) for node in nodes]  # no hang: both launchers end
    assert all(node.returncode != 0 for node in nodes)
    survivor = outputs[0][1] + outputs[1][1]
    lines = [line for line in survivor.splitlines() if line.startswith("interrupted: lost contact")]
    assert lines and "--resume" in lines[0], survivor[-3000:]

    single_losses, two_node_losses = _losses(tmp_path / "single"), _losses(run)
    for step in (1, 2, 3):
        np.testing.assert_allclose(two_node_losses[step], single_losses[step], rtol=1e-5)

    port = _port()
    resumed = [_node(rank, port, [*_pretrain_args(data, run), "--resume"], env) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in resumed]
    assert all(node.returncode == 0 for node in resumed), outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert sorted(_losses(run)) == list(range(1, 20 * 3 + 1)), "one record per step, none lost or repeated"
    assert (run / "backbone.safetensors").exists()
    assert load_backbone(run / "backbone.safetensors").name == "tinycnn"
