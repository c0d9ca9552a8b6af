"""The open-vocabulary detection study behind docs/vision_language.md ("Open-vocabulary detection"): AP50 on seen
and unseen digit classes of composed canvases for random, SSL (SimCLR), image-level CLIP and DITO backbones.

    PYTHONPATH=src:. python bench/open_vocab_detection.py --steps dito,detect   # pre-train DITO, evaluate every row
    PYTHONPATH=src:. python bench/open_vocab_detection.py --steps finetune     # random, CLIP, DITO, backbone fine-tuned

clip, clip_random and simclr are bench/vision_language.py's runs (`--steps runs` there, or `--steps clip,simclr`
here); a finished run is kept.

Runs use bench/vision_language.py's setting exactly (captions:composed:builtin:2000, tinycnn at 28 px,
20 epochs, batch 128, seed 0; CLIP's lr and joint space), so DITO differs from CLIP only by its region term.
Runs land in runs/vision_language/, results in bench/results/vision_language/detection_STEP.json, and every
evaluation is recorded in runs/vision_language/pretrainlab.db.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.vision_language import (
    CLIP_OPTIONS,
    DATA,
    EPOCHS,
    IMG_SIZE,
    RESULTS,
    RUN_PLAN,
    RUNS,
    SEED,
    STORE,
    run_config,
)
from pretrainlab.pipeline import evaluate_backbone, pretrain, untrained_run

DETECTION_DATA = "composed:builtin:2000"
PROBE_SEEDS = (0, 1)
PLAN = {"clip": RUN_PLAN["clip"], "simclr": RUN_PLAN["simclr"], "dito": ("dito", DATA, {"lr": 4e-3}, CLIP_OPTIONS)}
# row label -> run (a folder under RUNS, or a timm: spec), and what gives its class-name embeddings
ROWS = {
    "random tinycnn": ("timm:tinycnn", "MiniLM"),
    "SimCLR (canvases)": ("simclr", "MiniLM"),
    "CLIP random init": ("clip_random", "its random text tower"),
    "CLIP (image-level)": ("clip", "its text tower"),
    "DITO (image + region)": ("dito", "its text tower"),
}


def pre_train(name: str) -> None:
    if (RUNS / name / "backbone.safetensors").exists():
        return
    started = time.perf_counter()
    config = run_config(name, *PLAN[name])
    pretrain(config, resume=(RUNS / name / "checkpoints" / "last.pt").exists(), show_progress=False)
    print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    if name == "clip" and not (RUNS / "clip_random" / "backbone.safetensors").exists():
        untrained_run(run_config("clip_random", *PLAN["clip"]))


# the `finetune` step: the head trains with a copy of the backbone (lr x 0.1), for the rows that matter most
FINETUNE_ROWS = ("random tinycnn", "CLIP (image-level)", "DITO (image + region)")


def detect_step(finetune: bool = False) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for label, (run, texts) in ROWS.items():
        if finetune and label not in FINETUNE_ROWS:
            continue
        spec = run if run.startswith("timm:") else str(RUNS / run)
        per_seed = []
        for seed in PROBE_SEEDS:
            started = time.perf_counter()
            options = {"img_size": IMG_SIZE, "seed": seed, **({"finetune": True} if finetune else {})}
            results = evaluate_backbone(spec, DETECTION_DATA, ["open_vocab_detection"], store=STORE, options=options)
            values = {r.metric: round(r.value, 2) for r in results}
            per_seed.append({**values, "seconds": round(time.perf_counter() - started, 1),
                             "per_class_ap50": results[0].settings["per_class_ap50"]})
            print(label, seed, per_seed[-1], flush=True)
        rows[label] = {"run": run, "text_embeddings": texts, "seeds": per_seed,
                       "settings": {k: v for k, v in results[0].settings.items() if k != "per_class_ap50"}}
    return rows


# The test-sized check (tests/test_dito.py's setting, probe on 800 canvases): a brief DITO run vs its own random
# init, with and without the region-score ensemble. Runs in runs/open_vocab_brief/.
BRIEF_TEXT = {"text_pooling": "mean", "text_width": 32, "text_depth": 1, "text_heads": 2, "embed_dim": 32}
BRIEF_TRAIN = {"epochs": 8, "batch_size": 64, "lr": 4e-3, "warmup_epochs": 1, "seed": 0, "log_every": 100}


def brief_step() -> dict[str, Any]:
    from pretrainlab.data import load_source
    from pretrainlab.pipeline import build_run_config

    root, source = RUNS.parent / "open_vocab_brief", load_source("captions:composed:builtin:800")
    settings = {"backbone": "tinycnn", "data": source.spec, "img_size": IMG_SIZE}
    if not (root / "dito" / "backbone.safetensors").exists():
        pretrain(build_run_config("dito", {**settings, "out": str(root / "dito")}, BRIEF_TRAIN, BRIEF_TEXT),
                 show_progress=False, source=source)
    if not (root / "random" / "backbone.safetensors").exists():
        untrained_run(build_run_config("dito", {**settings, "out": str(root / "random")}, BRIEF_TRAIN, BRIEF_TEXT),
                      source)
    rows = {}
    for name in ("dito", "random"):
        for label, weights in (("ensemble", {}), ("head only", {"vlm_weight_seen": 0, "vlm_weight_unseen": 0})):
            options = {"img_size": IMG_SIZE, "detect_epochs": 1, "detect_min_steps": 150, **weights}
            results = evaluate_backbone(str(root / name), "composed:builtin:800", ["open_vocab_detection"],
                                        options=options)
            rows[f"{name}, {label}"] = {r.metric: round(r.value, 2) for r in results}
            print(name, label, rows[f"{name}, {label}"], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="detect", help=f"comma list of {', '.join(PLAN)}, detect, finetune, brief")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for step in args.steps.split(","):
        if step in PLAN:
            pre_train(step)
            continue
        started = time.perf_counter()
        if step == "brief":
            record = {"step": step, "data": "composed:builtin:800", "pretraining_data": "captions:composed:builtin:800",
                      "train": BRIEF_TRAIN, "method_options": BRIEF_TEXT, "rows": brief_step()}
        else:
            record = {"step": step, "data": DETECTION_DATA, "pretraining_data": DATA, "img_size": IMG_SIZE,
                      "seed": SEED, "epochs": EPOCHS, "probe_seeds": list(PROBE_SEEDS),
                      "finetune": step == "finetune", "rows": detect_step(finetune=step == "finetune")}
        record["seconds"] = round(time.perf_counter() - started, 1)
        (RESULTS / f"detection_{step}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
