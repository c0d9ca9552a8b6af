"""The UNITER study behind docs/vision_language.md, "Image-text matching (UNITER)": UNITER against CLIP
at the same budget and against random init, on SYNTHETIC captions of composed digit canvases, seed 0.

    python bench/uniter_study.py --step train --stop-after 160   # pre-train in resumable chunks
    python bench/uniter_study.py --step train                    # ... to the end (20 epochs)
    python bench/uniter_study.py --step eval                     # every row; bench/results/uniter/eval.json
    python bench/uniter_study.py --step all                      # train to the end, then evaluate

Budget and data are those of bench/vision_language.py's CLIP run (tinycnn, 28 px, 20 epochs, batch 128,
AdamW lr 4e-3, 1 warm-up epoch, seed 0, captions:composed:builtin:2000), so that run is the CLIP row:
`--clip RUN` points at it (default: runs/vision_language/clip, trained by bench/vision_language.py).
Runs land in runs/uniter/, evaluations in runs/uniter/pretrainlab.db.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pretrainlab.pipeline import build_run_config, evaluate_backbone, pretrain, untrained_run
from pretrainlab.train.loop import TrainingInterrupted

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "uniter"
RESULTS = ROOT / "bench" / "results" / "uniter"
STORE = RUNS / "pretrainlab.db"
DATA = "captions:composed:builtin:2000"
IMG_SIZE = 28
SEED = 0
BUDGET = {"epochs": 20, "batch_size": 128, "seed": SEED, "warmup_epochs": 1, "lr": 4e-3}
OPTIONS = {"width": 64, "depth": 2, "heads": 4}
MATCHING_IMAGES = 100  # test canvases (and their 300 captions) ranked by every pair's score


def run_config(name: str, stop_after: int = 0):  # noqa: ANN201
    budget = {**BUDGET, "stop_after": stop_after}
    return build_run_config("uniter", {"backbone": "tinycnn", "data": DATA, "img_size": IMG_SIZE,
                                       "out": str(RUNS / name)}, budget, OPTIONS)


def train(stop_after: int) -> None:
    if not (RUNS / "uniter_random" / "backbone.safetensors").exists():
        untrained_run(run_config("uniter_random"))
    if (RUNS / "uniter" / "backbone.safetensors").exists():
        print("uniter: finished", flush=True)
        return
    started = time.perf_counter()
    resume = (RUNS / "uniter" / "checkpoints" / "last.pt").exists()
    try:
        pretrain(run_config("uniter", stop_after), resume=resume, show_progress=False)
    except TrainingInterrupted as stopped:  # --stop-after: the chunk ends with a checkpoint to resume from
        print(stopped, flush=True)
    print(f"uniter: {time.perf_counter() - started:.0f} s this chunk", flush=True)


def scores(run: str, data: str, protocols: list[str], **options: Any) -> dict[str, float]:
    results = evaluate_backbone(run, data, protocols, img_size=IMG_SIZE, options=options or None, store=STORE)
    return {f"{r.protocol}/{r.metric}": round(r.value, 2) for r in results}


def evaluate(clip_run: Path) -> dict[str, Any]:
    clip_copy = RUNS / "clip"  # a copy: evaluating writes evaluations.jsonl into the run folder
    if not clip_copy.exists():
        shutil.copytree(clip_run, clip_copy, ignore=shutil.ignore_patterns("checkpoints", "evaluations.jsonl"))
    rows: dict[str, Any] = {}
    # The random row is the UNITER run's own starting point (same seed, exported before the first step).
    plan = (("UNITER", RUNS / "uniter"), ("CLIP", clip_copy), ("UNITER random init", RUNS / "uniter_random"))
    for label, spec in plan:
        started = time.perf_counter()
        row = scores(str(spec), DATA, ["image_text_matching"], images=MATCHING_IMAGES)
        row.update(scores(str(spec), "composed:builtin:2000", ["multilabel"]))
        row.update({f"builtin {k}": v for k, v in scores(str(spec), "builtin", ["knn", "linear"]).items()})
        rows[label] = row
        print(label, row, f"{time.perf_counter() - started:.0f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", choices=("train", "eval", "all"), required=True)
    parser.add_argument("--stop-after", type=int, default=0, help="train: stop (resumably) after this many steps")
    parser.add_argument("--clip", type=Path, default=ROOT / "runs" / "vision_language" / "clip")
    args = parser.parse_args()
    if args.step in ("train", "all"):
        train(args.stop_after)
    if args.step == "train":
        return
    started = time.perf_counter()
    rows = evaluate(args.clip)
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"step": "eval", "data": DATA, "img_size": IMG_SIZE, "seed": SEED, "budget": BUDGET, "options": OPTIONS,
              "matching_images": MATCHING_IMAGES, "clip_run": str(args.clip),
              "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    (RESULTS / "eval.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
