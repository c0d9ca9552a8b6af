"""The vision-language study behind docs/vision_language.md: CLIP, GPT4Image, LiMBeR and MILAN on
SYNTHETIC captions of composed digit canvases, at one small CPU budget, seed 0.

    python bench/vision_language.py --steps runs          # pre-train every run (resumable: finished runs are kept)
    python bench/vision_language.py --steps clip,gpt4image,limber,milan   # evaluate; one JSON per step

Data: `captions:composed:builtin:2000` (2,000 training and 500 test canvases of 2-4 MNIST digits from
the embedded set, three generated captions each), at 28 px (canvases halved: digits are 14 px).
Runs land in runs/vision_language/, results in bench/results/vision_language/STEP.json, and every
evaluation is also recorded in runs/vision_language/pretrainlab.db.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pretrainlab.data import load_source
from pretrainlab.pipeline import build_run_config, evaluate_backbone, pretrain, untrained_run

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "vision_language"
RESULTS = ROOT / "bench" / "results" / "vision_language"
STORE = RUNS / "pretrainlab.db"
DATA = "captions:composed:builtin:2000"
IMG_SIZE = 28
SEED = 0
EPOCHS = 20
BATCH_SIZE = 128
CLIP_OPTIONS = {"embed_dim": 64, "text_width": 64, "text_depth": 2, "text_heads": 4}
# name -> (method, data, overrides of the training budget, method options)
RUN_PLAN: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "clip": ("clip", DATA, {"lr": 4e-3}, CLIP_OPTIONS),
    "clip_minilm": ("clip", DATA, {"lr": 4e-3}, {"embed_dim": 64, "text_encoder": "minilm"}),
    "simclr": ("simclr", DATA, {}, {"hidden_dim": 256}),
    "simclr_gpt4image": ("compose:simclr+gpt4image", DATA, {"optimizer": "sgd", "lr": 0.06, "weight_decay": 5e-4},
                         {"simclr": {"hidden_dim": 256}, "gpt4image": {"hidden_dim": 256}}),
    "supervised_digits": ("supervised", "builtin", {}, {}),
    "simclr_digits": ("simclr", "builtin", {}, {"hidden_dim": 256}),
    "clip_digits": ("clip", "captions:builtin", {"lr": 4e-3, "epochs": 5}, CLIP_OPTIONS),
}
UNTRAINED = {"clip_random": "clip", "clip_minilm_random": "clip_minilm"}


def run_config(name: str, method: str, data: str, train: dict[str, Any], options: dict[str, Any]):  # noqa: ANN201
    budget = {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "seed": SEED, "warmup_epochs": 1, **train}
    return build_run_config(method, {"backbone": "tinycnn", "data": data, "img_size": IMG_SIZE,
                                     "out": str(RUNS / name)}, budget, options)


def pre_train_all() -> None:
    for name, (method, data, train, options) in RUN_PLAN.items():
        if (RUNS / name / "backbone.safetensors").exists():
            continue
        started = time.perf_counter()
        resume = (RUNS / name / "checkpoints" / "last.pt").exists()
        config = run_config(name, method, data, train, options)
        pretrain(config, resume=resume, show_progress=False)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    for name, trained in UNTRAINED.items():
        if not (RUNS / name / "backbone.safetensors").exists():
            untrained_run(run_config(name, *RUN_PLAN[trained]))


def scores(run: str, data: str, protocols: list[str], **options: Any) -> dict[str, float]:
    results = evaluate_backbone(run, data, protocols, options=options or None, store=STORE)
    return {f"{r.protocol}/{r.metric}": round(r.value, 2) for r in results}


def clip_step() -> dict[str, Any]:
    rows = {}
    for name in ("clip", "clip_random", "clip_minilm", "clip_minilm_random"):
        run = str(RUNS / name)
        rows[name] = {**scores(run, DATA, ["zero_shot", "image_text_retrieval"]),
                      **{f"builtin {k}": v for k, v in scores(run, "builtin", ["zero_shot"]).items()}}
    return rows


def gpt4image_step() -> dict[str, Any]:
    rows = {}
    for name in ("simclr", "simclr_gpt4image"):
        run = str(RUNS / name)
        rows[name] = {**scores(run, "composed:builtin:2000", ["multilabel"]),
                      **{f"builtin {k}": v for k, v in scores(run, "builtin", ["knn", "linear"]).items()}}
    rows["random tinycnn"] = {**scores("timm:tinycnn", "composed:builtin:2000", ["multilabel"]),
                              **{f"builtin {k}": v for k, v in scores("timm:tinycnn", "builtin",
                                                                       ["knn", "linear"]).items()}}
    return rows


def gpt4image_seed_step(seed: int = 1) -> dict[str, Any]:
    """The GPT4Image comparison again at another seed: both runs trained (resumably) and evaluated."""
    rows = {}
    for name in ("simclr", "simclr_gpt4image"):
        method, data, train, options = RUN_PLAN[name]
        run = f"{name}_seed{seed}"
        if not (RUNS / run / "backbone.safetensors").exists():
            started = time.perf_counter()
            config = run_config(run, method, data, {**train, "seed": seed}, options)
            pretrain(config, resume=(RUNS / run / "checkpoints" / "last.pt").exists(), show_progress=False)
            print(f"{run}: {time.perf_counter() - started:.0f} s", flush=True)
        rows[run] = {**scores(str(RUNS / run), "composed:builtin:2000", ["multilabel"]),
                     **{f"builtin {k}": v for k, v in scores(str(RUNS / run), "builtin", ["knn", "linear"]).items()}}
        print(run, rows[run], flush=True)
    return rows


# Backbones probed by LiMBeR and neuron descriptions, each at the size where digits have its training scale:
# runs trained on 28 px canvases (14 px digits) at 28 px, runs trained on single 28 px digits at 56 px.
PROBED = {
    "random tinycnn": ("timm:tinycnn", {}),
    "SimCLR (canvases)": ("simclr", {}),
    "SimCLR (digits)": ("simclr_digits", {"img_size": 56}),
    "supervised (digits)": ("supervised_digits", {"img_size": 56}),
    "CLIP (canvases)": ("clip", {}),
    "SimCLR + GPT4Image (canvases)": ("simclr_gpt4image", {}),
}


def probe_step(data: str, protocol: str) -> dict[str, Any]:
    rows = {}
    for label, (name, options) in PROBED.items():
        spec = name if name.startswith("timm:") else str(RUNS / name)
        results = evaluate_backbone(spec, data, [protocol], img_size=IMG_SIZE, options=options or None, store=STORE)
        rows[label] = {r.metric: round(r.value, 2) for r in results}
        rows[label]["settings"] = {k: v for k, v in results[0].settings.items()
                                   if k in ("img_size", "blind_bleu4", "blind_caption", "examples", "chance_agreement",
                                            "best_described", "distinct_descriptions")}
        print(label, {k: v for k, v in rows[label].items() if k != "settings"}, flush=True)
    return rows


def curate_step() -> dict[str, Any]:
    """Curation of a folder of 300 held-out digits plus 15 exact and 15 noisy copies: drop the 7s by
    zero-shot choice against the other digits' prompts, and the copies as near-duplicates."""
    import numpy as np
    from PIL import Image

    from pretrainlab.curate import CurationConfig, curate_folder

    source = load_source("builtin")  # the CLIP run never saw these test-split digits
    folder, out = RUNS / "curate_input", RUNS / "curate_output"
    if not folder.exists():
        folder.mkdir(parents=True)
        rng = np.random.default_rng(SEED)
        chosen = np.sort(rng.choice(len(source.test), 300, replace=False))  # the split is ordered by class
        images, labels = source.test.images[chosen, :, :, 0], source.test.labels[chosen]
        for index, image in enumerate(images):
            Image.fromarray(image).save(folder / f"digit{index:03d}_label{labels[index]}.png")
        for copy, index in enumerate(rng.choice(300, 30, replace=False)):
            noisy = images[index].astype(np.int16) + (rng.integers(-8, 9, images[index].shape) if copy >= 15 else 0)
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"zcopy{copy:02d}_of_{index:03d}.png")
    import shutil

    rows = {}
    for threshold in (0.95, 0.98):
        if out.exists():
            shutil.rmtree(out)
        config = CurationConfig(data=f"folder:{folder}", out=str(out), exclude=("a 7",),
                                against=tuple(f"a {d}" for d in range(10) if d != 7),
                                model=str(RUNS / "clip_digits"), duplicate_threshold=threshold, copy=False)
        summary = curate_folder(config)
        manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        kind = {row["file"]: (row["reason"] or "").partition(":")[0] for row in manifest}
        sevens = {f for f in kind if f.startswith("digit") and f.endswith("label7.png")}
        excluded = {f for f, k in kind.items() if k == "excluded by text query"}
        duplicates = {f for f, k in kind.items() if k == "near-duplicate"}
        copies = {f for f in kind if f.startswith("zcopy")}
        rows[f"duplicate threshold {threshold}"] = {
            "images": summary["images"], "kept": summary["kept"], "sevens": len(sevens),
            "sevens_excluded": len(sevens & excluded), "other_digits_excluded": len(excluded - sevens - copies),
            "copies": len(copies), "copies_dropped_as_duplicates": len(copies & duplicates),
            "copies_dropped_as_sevens": len(copies & excluded),
            "originals_dropped_as_duplicates": len(duplicates - copies)}
    return rows


# DenseCLIP: image-text runs get the denseclip protocol (score maps, text-initialised probe, plain probe at the
# same settings); backbones without a text tower the plain dense probe. All at 28 px, their training scale.
DENSE_ROWS = {
    "CLIP, text transformer": ("clip", "denseclip"),
    "CLIP, frozen MiniLM tower": ("clip_minilm", "denseclip"),
    "CLIP random init": ("clip_random", "denseclip"),
    "SimCLR (canvases)": ("simclr", "dense"),
    "SimCLR + GPT4Image (canvases)": ("simclr_gpt4image", "dense"),
    "random tinycnn": ("timm:tinycnn", "dense"),
}
DENSE_TRAIN_SIZES = (2000, 50)  # training canvases for the probes: all, and a low-label regime


def dense_step() -> dict[str, Any]:
    from pretrainlab.data.subsets import limit_source

    full = load_source("composed:builtin:2000")
    rows: dict[str, Any] = {}
    for size in DENSE_TRAIN_SIZES:
        source = limit_source(full, max_train=size)
        for label, (name, protocol) in DENSE_ROWS.items():
            if size < len(full.train) and "GPT4Image" in label:
                continue  # the low-label regime: the image-text runs against SimCLR and random
            spec = name if name.startswith("timm:") else str(RUNS / name)
            results = evaluate_backbone(spec, source.spec, [protocol], img_size=IMG_SIZE, source=source,
                                        options={"img_size": IMG_SIZE}, store=STORE)
            row = {r.metric: round(r.value, 2) for r in results}
            rows[f"{label} | {size} train canvases"] = row
            print(label, size, row, flush=True)
    return rows


GROUNDING_ROWS = {
    "CLIP, text transformer": "clip",
    "CLIP, frozen MiniLM tower": "clip_minilm",
    "SimCLR (canvases)": "simclr",
    "SimCLR + GPT4Image (canvases)": "simclr_gpt4image",
    "random tinycnn": "timm:tinycnn",
}


def grounding_step() -> dict[str, Any]:
    """Answer grounding on the canvases' generated questions, every backbone at 28 px."""
    source = load_source("composed:builtin:2000")
    rows: dict[str, Any] = {}
    for label, name in GROUNDING_ROWS.items():
        spec = name if name.startswith("timm:") else str(RUNS / name)
        results = evaluate_backbone(spec, source.spec, ["answer_grounding"], img_size=IMG_SIZE, source=source,
                                    options={"img_size": IMG_SIZE}, store=STORE)
        rows[label] = {r.metric: round(r.value, 2) for r in results}
        rows[label]["settings"] = {k: results[0].settings[k] for k in ("train_questions", "test_questions",
                                                                       "iou_all_objects", "examples")}
        print(label, rows[label], flush=True)
    return rows


STEPS = {"dense": dense_step, "grounding": grounding_step, "clip": clip_step, "curate": curate_step,
         "gpt4image": gpt4image_step, "gpt4image_seed1": gpt4image_seed_step,
         "limber": lambda: probe_step(DATA, "limber"),
         "milan": lambda: probe_step("composed:builtin:2000", "neuron_descriptions")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="runs", help=f"comma list of runs, {', '.join(STEPS)}")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_source(DATA)  # decode and cache once
    for step in args.steps.split(","):
        if step == "runs":
            pre_train_all()
            continue
        started = time.perf_counter()
        rows = STEPS[step]()
        record = {"step": step, "data": DATA, "img_size": IMG_SIZE, "seed": SEED, "epochs": EPOCHS,
                  "batch_size": BATCH_SIZE, "seconds": round(time.perf_counter() - started, 1), "rows": rows}
        (RESULTS / f"{step}.json").write_text(json.dumps(record, indent=1))
        print(json.dumps(record, indent=1), flush=True)


if __name__ == "__main__":
    main()
