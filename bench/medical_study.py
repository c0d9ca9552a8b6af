"""Medical-style small-data study on grey multi-label canvases (issue 17, part 6; docs/medical.md).

Two comparisons of the medical pre-training papers, at a CPU budget, on `composed:` canvases of
Fashion-MNIST garments (grey, 2-4 garments per canvas, a multi-hot label of the 10 classes present):

1. "Delving into Masked Autoencoders for Multi-Label Thorax Disease Classification" (arXiv 2210.12843):
   MAE on a ViT with the small-data recipe (90 % masked, crops 0.5-1.0; `--recipe mae_small_data`) vs
   MAE's natural-image settings vs a CNN pre-trained with MoCo v2, all fine-tuned multi-label with
   layer-wise lr decay, RandAugment and drop-path (the ViT's).
2. "Self-Supervised Pre-Training with Contrastive and Masked Autoencoder Methods for Dealing with Small
   Datasets in Deep Learning for Medical Imaging" (arXiv 2308.06534): SparK vs SimCLR and MoCo v2 on one
   CNN, fine-tuned on 1, 10 and 100 % of the labelled canvases (the claim: which wins changes as the
   labelled set shrinks).

Steps, each resumable (a finished run or result is skipped, a killed pre-training resumes), so each can
be queued on its own in the study lane (bench/medical_study.sh):

    python bench/medical_study.py --pretrain mae_small_data,mae          # runs/medical/NAME
    python bench/medical_study.py --evaluate all --seeds 0               # bench/results/medical/NAME-seedS.json
    python bench/medical_study.py --render                               # docs/medical.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.` imports when run as a script

from bench.common import shared_data  # noqa: E402
from bench.medical_render import render  # noqa: E402
from pretrainlab.data import load_source  # noqa: E402
from pretrainlab.data.source import ImageSource  # noqa: E402
from pretrainlab.eval import EvalContext, evaluate, load_target  # noqa: E402
from pretrainlab.pipeline import build_run_config, pretrain, saved_run_config  # noqa: E402
from pretrainlab.train.checkpoint import checkpoint_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = shared_data("fashion_mnist.npz")
CANVASES = 2000
RUNS = ROOT / "runs" / "medical"
RESULTS = ROOT / "bench" / "results" / "medical"
IMG_SIZE = 32  # canvases are 56 px; 32 px keeps the ViT at 8x8 tokens of 4 px
EPOCHS, BATCH_SIZE = 20, 128
FRACTIONS = [0.01, 0.1, 1.0]
CNN, VIT = "tinycnn", "vit_nano_patch4"
# name: (method, backbone, packaged recipe or None, method options); None method: the random init
ROWS: dict[str, tuple[str | None, str, str | None, dict]] = {
    "random_cnn": (None, CNN, None, {}),
    "random_vit": (None, VIT, None, {}),
    "mae_small_data": ("mae", VIT, "mae_small_data", {}),
    "mae": ("mae", VIT, None, {}),
    "mocov2": ("mocov2", CNN, None, {}),
    "simclr": ("simclr", CNN, None, {}),
    "spark": ("spark", CNN, None, {}),
}
# fine-tuning: the authors' ViT scripts use layer decay 0.55 and drop-path 0.2; RandAugment magnitude 6 is
# ours for both (not tuned); the CNN keeps layer decay 1 and has no residual branches for drop-path
# (60 steps or more per fraction: measured 0.1 CPU-s a step for tinycnn, 0.4 for vit_nano at batch 64)
FINETUNE = {"epochs": 3, "batch_size": 64, "min_steps": 60, "lr": 1e-3, "randaugment": 6, "flip_p": 0.5}
VIT_FINETUNE = {"layer_decay": 0.55, "drop_path": 0.2}


def load_canvases() -> ImageSource:
    if not DATA.exists():
        sys.exit(f"missing {DATA}: this study reads the offline Fashion-MNIST copy in ../shared/data")
    return load_source(f"composed:npz:{DATA}:{CANVASES}")


def pretrain_row(name: str, source: ImageSource) -> None:
    """Pre-trains one row into runs/medical/NAME; skips a finished run, resumes a killed one."""
    method, backbone, recipe, options = ROWS[name]
    if method is None:
        return
    out = RUNS / name
    if (out / "backbone.safetensors").exists():
        print(f"{name}: pre-trained, skipped")
        return
    config = build_run_config(method, {"backbone": backbone, "data": source.spec, "out": str(out),
                                       "img_size": IMG_SIZE},
                              {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "knn_every": 0, "seed": 0}, options,
                              Path(recipe) if recipe else None)
    resume = checkpoint_path(out).exists()  # killed: continue from its last checkpoint
    started = time.perf_counter()
    summary = pretrain(saved_run_config(out) if resume else config, resume=resume, source=source,
                       show_progress=False)
    print(f"{name}: pre-trained in {time.perf_counter() - started:.0f} s, final loss {summary['final_loss']:.4f}")


def target_spec(name: str) -> str:
    method, backbone, _, _ = ROWS[name]
    return f"timm:{backbone}" if method is None else str(RUNS / name)


def evaluate_row(name: str, source: ImageSource, seed: int) -> None:
    """Multi-label fine-tuning at every fraction and the frozen multi-label probe, one JSON per row and seed."""
    path = RESULTS / f"{name}-seed{seed}.json"
    if path.exists():
        print(f"{path.name}: done, skipped")
        return
    _, backbone, _, _ = ROWS[name]
    torch.manual_seed(0)  # the random-init rows: the same weights for every seed
    target = load_target(target_spec(name), IMG_SIZE, source.channels)
    options = {**FINETUNE, **(VIT_FINETUNE if backbone == VIT else {}), "fractions": FRACTIONS, "seed": seed}
    started = time.perf_counter()
    finetuned = evaluate(EvalContext(target, source, torch.device("cpu"), options), "multilabel_finetune")
    probe = evaluate(EvalContext(target, source, torch.device("cpu"), {"seed": seed}), "multilabel")
    row = {"name": name, "backbone": backbone, "seed": seed, "target": target_spec(name), "data": source.spec,
           "img_size": IMG_SIZE, "finetune_options": {k: v for k, v in options.items() if k != "fractions"},
           "finetune": {result.metric: result.value for result in finetuned},
           "probe": {result.metric: result.value for result in probe},
           "seconds": time.perf_counter() - started, "measured": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(row, indent=2))
    temporary.replace(path)
    print(json.dumps({key: row[key] for key in ("name", "seed", "finetune", "probe")}))


def names(text: str) -> list[str]:
    chosen = list(ROWS) if text == "all" else [name for name in text.split(",") if name]
    unknown = [name for name in chosen if name not in ROWS]
    if unknown:
        sys.exit(f"unknown rows {unknown}; valid: {', '.join(ROWS)} or all")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain", default="", help="comma-separated rows, or all")
    parser.add_argument("--evaluate", default="", help="comma-separated rows, or all")
    parser.add_argument("--seeds", default="0,1", help="fine-tuning seeds (subsets, head, augmentation)")
    parser.add_argument("--render", action="store_true", help="write docs/medical.md's tables")
    args = parser.parse_args()
    if args.pretrain or args.evaluate:
        source = load_canvases()
        for name in names(args.pretrain) if args.pretrain else []:
            pretrain_row(name, source)
        for seed in (int(seed) for seed in args.seeds.split(",")):
            for name in names(args.evaluate) if args.evaluate else []:
                evaluate_row(name, source, seed)
    if args.render:
        render(RESULTS, ROOT / "docs" / "medical.md", FRACTIONS)


if __name__ == "__main__":
    main()
