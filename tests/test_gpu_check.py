"""bench/gpu_check.sh runs end to end on the CPU with tiny sizes, so the GPU check cannot rot unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_script_writes_its_json_on_cpu(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=rng.integers(0, 255, (320, 16, 16, 3), dtype=np.uint8), y_train=np.arange(320) % 4,
             x_test=rng.integers(0, 255, (80, 16, 16, 3), dtype=np.uint8), y_test=np.arange(80) % 4)
    env = {**os.environ, "TINY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "check.json"
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(out), "--data", f"npz:{data}",
                             "--work", str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["tiny"] and report["step"]["ratio"] > 0 and report["step"]["bare_images_per_second"] > 0
    assert 0 <= report["pretrain"]["knn_top1"] <= 100 and report["pretrain"]["steps"] > 0
    assert report["gauntlet"]["seconds"] > 0 and not report["gauntlet"]["failed"]
    assert {"knn top1", "linear top1"} <= set(report["gauntlet"]["results"])
