"""The captioning probe study behind docs/vision_language.md ("Captioning probe"): a plain attention LSTM
decoder vs CNM's collocated modules (arXiv 1904.08608) on the frozen features of random, SimCLR and CLIP
tinycnn backbones, on SYNTHETIC captions of composed digit canvases, seed 0.

    python bench/captioning_probe.py --backbones random,simclr,clip     # one JSON per backbone (kept: resumable)
    python bench/captioning_probe.py --table                            # the markdown table of what is there

The SimCLR and CLIP runs are those of bench/vision_language.py (`--steps runs`, in runs/vision_language/);
`--runs-from DIR` takes them from another folder. Their backbone.safetensors and config.yaml are copied into
runs/captioning/NAME first, so the evaluations are recorded there and in runs/captioning/pretrainlab.db,
never in the source folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pretrainlab.pipeline import evaluate_backbone

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "captioning"
RESULTS = ROOT / "bench" / "results" / "captioning"
STORE = RUNS / "pretrainlab.db"
DATA = "captions:composed:builtin:1000"  # 1,000 training and 250 test canvases, three captions each
IMG_SIZE = 28  # the runs' own input size: 56 px canvases halved, 14 px digits (a 7 x 7 map: 49 cells)
SEED = 0
# The decoders' budget (each of the two): AdamW lr 3e-3, batch 128, 203 steps (29 epochs of the 1,000 canvases).
BUDGET = {"caption_epochs": 25, "caption_min_steps": 200, "caption_batch_size": 128, "caption_lr": 3e-3}
# key -> (label, run folder name under --runs-from, or a timm spec; options)
BACKBONES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "random": ("random tinycnn", "timm:tinycnn", {"img_size": IMG_SIZE}),
    "simclr": ("SimCLR (canvases)", "simclr", {"img_size": IMG_SIZE}),
    "clip": ("CLIP (canvases)", "clip", {"img_size": IMG_SIZE}),
    "gpt4image": ("SimCLR + GPT4Image (canvases)", "simclr_gpt4image", {"img_size": IMG_SIZE}),
    "supervised": ("supervised (single digits, probed at 56 px)", "supervised_digits", {"img_size": 56}),
}


def local_run(name: str, runs_from: Path) -> str:
    """A copy of the run's backbone and config under runs/captioning/, so nothing is written into the source."""
    if name.startswith("timm:"):
        return name
    copy = RUNS / name
    if not (copy / "backbone.safetensors").is_file():
        copy.mkdir(parents=True, exist_ok=True)
        for file in ("config.yaml", "backbone.safetensors"):
            shutil.copy2(runs_from / name / file, copy / file)
    return str(copy)


def probe(key: str, runs_from: Path, seed: int) -> dict[str, Any]:
    label, name, options = BACKBONES[key]
    started = time.perf_counter()
    results = evaluate_backbone(local_run(name, runs_from), DATA, ["captioning"], img_size=IMG_SIZE,
                                options={"seed": seed, **BUDGET, **options}, store=STORE)
    settings = results[0].settings
    return {"label": label, "run": name, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
            "scores": {r.metric: round(r.value, 3) for r in results},
            "settings": {k: settings[k] for k in ("input_size", "cells", "channels", "vocabulary", "epochs", "lr",
                                                  "batch_size", "train_images", "test_images", "plain",
                                                  "collocated")}}


def table() -> str:
    lines = ["| backbone | BLEU-4 plain | BLEU-4 collocated | CIDEr-D plain | CIDEr-D collocated | object F1 plain "
             "| object F1 collocated | controller agreement | s |", "| --- |" + " --- |" * 8]
    for key in BACKBONES:
        for path in sorted(RESULTS.glob(f"{key}_seed*.json")):
            row = json.loads(path.read_text())
            s = row["scores"]
            lines.append(f"| {row['label']} (seed {row['seed']}) | {s['bleu4@plain']:.1f} "
                         f"| {s['bleu4@collocated']:.1f} | {s['cider_d@plain']:.3f} | {s['cider_d@collocated']:.3f} "
                         f"| {s['object_f1@plain']:.1f} | {s['object_f1@collocated']:.1f} "
                         f"| {row['settings']['collocated']['controller_agreement']:.1f} % | {row['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="", help=f"comma-separated, of {', '.join(BACKBONES)}")
    parser.add_argument("--runs-from", type=Path, default=ROOT / "runs" / "vision_language")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for key in filter(None, args.backbones.split(",")):
        out = RESULTS / f"{key}_seed{args.seed}.json"
        if out.exists():
            continue
        row = probe(key, args.runs_from, args.seed)
        out.write_text(json.dumps(row, indent=1))
        print(key, row["scores"], f"{row['seconds']} s", flush=True)
    if args.table:
        print(table())


if __name__ == "__main__":
    main()
