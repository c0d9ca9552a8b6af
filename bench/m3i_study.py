"""M3I vs the weighted composition of the same parts vs each part alone vs random, at one small budget.

"Towards All-in-one Pre-training via Maximizing Multi-modal Mutual Information", arXiv 2211.09807: one MI
objective with the other view and the label as targets (`m3i`, targets=view+label), against
`compose:simclr+supervised` (the same two signals as separately designed losses, weights 1 + 1), `simclr` and
`supervised` alone, and a random tinycnn. The budget is bench/methods_table.py's: a fixed stratified
10,000-image Fashion-MNIST subset, 10 epochs of 256, tinycnn, seed 0, then kNN (k=200, T=0.07) and a linear
probe on frozen features of all 60,000 training images, scored on the 10,000 test images. Unlike the methods
table, every row here trains with the same optimiser (SGD, lr 0.06, weight decay 5e-4, 1 warm-up epoch:
the simclr recipe), so rows differ only in the objective.

    python bench/m3i_study.py --rows random,simclr      # measure rows (one JSON each in bench/results/m3i/)
    python bench/m3i_study.py --render                  # write the table into docs/m3i.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import methods_table  # noqa: E402  (it puts the checkout on sys.path, for `bench.` below)
from methods_table import BATCH_SIZE, CNN_BACKBONE, EPOCHS, ROOT, evaluate_target, last_logged, load_data  # noqa: E402

from bench.common import replace_block  # noqa: E402
from pretrainlab.backbones import create_backbone  # noqa: E402
from pretrainlab.eval import EvalTarget  # noqa: E402
from pretrainlab.eval.target import load_run_target  # noqa: E402
from pretrainlab.pipeline import build_run_config, pretrain  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "m3i"
PAGE = ROOT / "docs" / "m3i.md"
TRAIN = {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "warmup_epochs": 1.0, "knn_every": 0, "optimizer": "sgd",
         "lr": 0.06, "weight_decay": 5.0e-4, "seed": 0}
# row name -> (method, options); projection widths as the simclr recipe (hidden 512, output 128)
ROWS: dict[str, tuple[str, dict]] = {
    "simclr": ("simclr", {"hidden_dim": 512}),
    "supervised": ("supervised", {}),
    "compose:simclr+supervised": ("compose:simclr+supervised", {"simclr": {"hidden_dim": 512}}),
    "m3i": ("m3i", {"targets": "view+label"}),
    "m3i (view only)": ("m3i", {"targets": "view"}),
}


def file_key(row: str) -> str:
    return row.replace(":", "-").replace("+", "-").replace(" ", "-").replace("(", "").replace(")", "")


def measure(row: str) -> dict:
    full, subset = load_data()
    if row == "random":
        torch.manual_seed(0)
        backbone = create_backbone(CNN_BACKBONE, full.image_size[0], full.channels)
        return {"row": row, "method": "random init", "options": {}, "seconds": 0.0, "final_loss": None,
                **evaluate_target(EvalTarget(backbone, f"timm:{CNN_BACKBONE}", full.image_size[0]), full)}
    method, options = ROWS[row]
    out = ROOT / "runs" / "bench-m3i" / file_key(row)
    if out.exists():  # a fresh run: nothing of an earlier attempt may mix into its logs
        shutil.rmtree(out)
    config = build_run_config(method, {"backbone": CNN_BACKBONE, "data": full.spec, "out": str(out)}, TRAIN, options)
    started = time.perf_counter()
    summary = pretrain(config, source=subset, show_progress=False)
    seconds = time.perf_counter() - started
    return {"row": row, "method": method, "options": options, "seconds": seconds,
            "final_loss": summary["final_loss"], "last_logged": {key: last_logged(out, key) for key in
                                                                 ("view_loss", "label_loss", "supervised/loss")},
            **evaluate_target(load_run_target(out), full)}


def render() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    rows.sort(key=lambda r: (r["method"] != "random init", -r["knn_top1"]))
    lines = ["| row | options | kNN top-1 (k) | linear top-1 | pre-training s (shared CPU) |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        options = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "-"
        lines.append(f"| {row['row']} | {options} | {row['knn_top1']:.2f} ({row['knn_k']}) | "
                     f"{row['linear_top1']:.2f} | {row['seconds']:.0f} |")
    text = PAGE.read_text()
    PAGE.write_text(replace_block(text, "table", "\n".join(lines)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="", help=f"comma-separated, from random, {', '.join(ROWS)}")
    parser.add_argument("--render", action="store_true", help="write the table into docs/m3i.md")
    parser.add_argument("--data", type=Path, default=methods_table.DATA,
                        help=f"the Fashion-MNIST npz (default {methods_table.DATA})")
    args = parser.parse_args()
    methods_table.DATA = args.data  # load_data reads the module's path (a worktree has no ../shared)
    for row in filter(None, args.rows.split(",")):
        if row != "random" and row not in ROWS:
            sys.exit(f"unknown row {row!r}; valid: random, {', '.join(ROWS)}")
        result = {**measure(row), "measured": time.strftime("%Y-%m-%d %H:%M")}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{file_key(row)}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result))
    if args.render:
        render()


if __name__ == "__main__":
    main()
