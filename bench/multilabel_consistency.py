"""Do accurate multi-label models still produce incoherent predictions? (the ChessVision claim, at small scale)

Composed digit canvases (`composed:builtin:N`, 2 to 4 MNIST digits on a 2x2 grid) ship the rule their
construction guarantees: between 1 and 4 digit classes present. The multilabel protocol (linear heads on
frozen features, threshold 0.5) reports mAP, subset accuracy and the share of test canvases whose predicted
label set breaks that rule. Backbones: a random-init tinycnn and the supervised tinycnn runs of
bench/label_noise_pretraining.py (pre-trained on single MNIST digits at several label-noise rates), so the
rows span a range of accuracy.

    python bench/multilabel_consistency.py --canvases 1000     # rows in bench/results/consistency/
    python bench/multilabel_consistency.py --canvases 1000 --timm resnet18   # add a random-init timm backbone
    python bench/multilabel_consistency.py --render            # docs/multilabel_consistency.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from pretrainlab.data import load_source
from pretrainlab.eval import EvalContext, EvalTarget, evaluate
from pretrainlab.eval.target import load_run_target
from pretrainlab.pipeline import seeded_target

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.` imports when run as a script
from bench.common import replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "consistency"
DOC = ROOT / "docs" / "multilabel_consistency.md"
RUNS = ROOT / "runs" / "bench-label-noise"


def measure(label: str, target, source) -> dict:  # noqa: ANN001
    started = time.perf_counter()
    results = {r.metric: r for r in evaluate(EvalContext(target, source, torch.device("cpu"), {"seed": 0}),
                                             "multilabel")}
    settings = results["rule_violations"].settings
    return {"backbone": label, "data": source.spec, "mAP": results["mAP"].value,
            "subset_accuracy": results["subset_accuracy"].value, "rule_violations": results["rule_violations"].value,
            "rules": settings["rules"], "per_rule": settings["rule_violations_per_rule"],
            "ground_truth": settings["rule_violations_ground_truth"], "test_images": len(source.test),
            "seconds": time.perf_counter() - started, "measured": time.strftime("%Y-%m-%d %H:%M")}


def at_size(target: EvalTarget, size: int) -> EvalTarget:
    """The CNN run on canvases at their own size: digits keep the 28 px scale it was pre-trained on."""
    target.img_size = size
    return target


def render() -> None:
    rows = sorted((json.loads(p.read_text()) for p in RESULTS.glob("*.json")), key=lambda r: -r["mAP"])
    if not rows:
        return
    rules = rows[0]["rules"]
    lines = ["| backbone (frozen) | mAP | subset accuracy | canvases breaking a rule | "
             + " | ".join(f"`{rule}`" for rule in rules) + " |", "| --- |" + " --- |" * (3 + len(rules))]
    for row in rows:
        lines.append(f"| {row['backbone']} | {row['mAP']:.2f} | {row['subset_accuracy']:.2f} | "
                     f"{row['rule_violations']:.2f} | " + " | ".join(f"{v:.2f}" for v in row["per_rule"]) + " |")
    header = (f"`{rows[0]['data']}` ({rows[0]['test_images']} test canvases), multilabel protocol (linear heads on "
              "frozen pooled features, L2 by validation mAP, seed 0, threshold 0.5), the canvases' own rule file; "
              f"the ground truth breaks a rule on {rows[0]['ground_truth']:.2f} % of canvases. All values in %. "
              "Produced by `python bench/multilabel_consistency.py --render`.\n\n")
    text = DOC.read_text()
    DOC.write_text(replace_block(text, "results", header + "\n".join(lines)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--canvases", type=int, default=0, help="measure on composed:builtin:N (0: render only)")
    parser.add_argument("--timm", default="", help="comma-separated extra random-init timm backbones, e.g. resnet18")
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    if args.canvases:
        source = load_source(f"composed:builtin:{args.canvases}")
        size = source.image_size[0]
        RESULTS.mkdir(parents=True, exist_ok=True)
        extra = [name for name in args.timm.split(",") if name]
        targets = [(f"random-init {name}", lambda name=name: seeded_target(f"timm:{name}", size, 1))
                   for name in ["tinycnn", *extra]]
        for run in sorted(RUNS.glob("*-seed*")):
            if (run / "backbone.safetensors").exists():
                targets.append((f"supervised tinycnn, {run.name}", lambda run=run: at_size(load_run_target(run), size)))
        for label, make in targets:
            path = RESULTS / f"{label.replace(' ', '_').replace(',', '')}.json"
            if not path.exists():
                path.write_text(json.dumps(measure(label, make(), source), indent=2))
                print(path.read_text(), flush=True)
    if args.render or args.canvases:
        render()


if __name__ == "__main__":
    main()
