"""The papers' architectures at one budget: SimCLR (and SparK, ScatSimCLR where they apply) on Fashion-MNIST,
kNN and linear probe against random init of the same architecture; parameters, GMACs and images/s.

    python bench/architectures_table.py --rows slab,moat       # pre-train + evaluate rows (resumable: --reuse)
    python bench/architectures_table.py --random slab,moat     # the random-init baselines of those rows
    flock /tmp/pretrainlab-bench.lock python bench/architectures_table.py --speed slab,moat
    python bench/architectures_table.py --size all             # parameters and GMACs only (seconds, no timing)
    python bench/architectures_table.py --rows all --epochs 1  # the shorter budget (rows kept apart from 3 epochs)
    python bench/architectures_table.py --render               # docs/architectures.md (all three tables)

Budget (identical for every row): a fixed class-balanced 5,000-image subset of the Fashion-MNIST training split
at 32 px, 3 epochs of 64 images (234 steps), the method's own recipe (SimCLR: SGD, lr 0.06 per 256 scaled to
0.015, one warm-up epoch), seed 0. Evaluation: kNN (T=0.07, k by the DESIGN rule) and a linear probe on frozen
features of the same 5,000 training images, top-1 % on a fixed class-balanced 5,000-image subset of the test
split. Speed: the `speed` protocol on the CPU (batch 32, 3 warm-up + 10 timed iterations), under the bench lock.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from pretrainlab.backbones import create_backbone
from pretrainlab.data import load_source
from pretrainlab.data.source import ImageSource
from pretrainlab.data.subsets import limit_source
from pretrainlab.eval import EvalContext, EvalTarget, evaluate
from pretrainlab.eval.protocols.speed import count_macs, count_parameters
from pretrainlab.eval.target import load_run_target
from pretrainlab.pipeline import build_run_config, pretrain
from pretrainlab.train.checkpoint import checkpoint_path

ROOT = Path(__file__).resolve().parent.parent
# ../shared/data beside the checkout (main), or two levels up (a worktree under wt/)
SHARED = next((p / "shared" / "data" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared" / "data").is_dir()),
              ROOT.parent / "shared" / "data")
DATA = f"npz:{SHARED / 'fashion_mnist.npz'}"
RESULTS = ROOT / "bench" / "results" / "architectures"
RUNS = ROOT / "runs" / "bench-architectures"
IMG_SIZE, TRAIN_IMAGES, EVAL_IMAGES, EPOCHS, BATCH_SIZE = 32, 5_000, 5_000, 3, 64
DENSE_CANVASES = 1_000  # composed training canvases (and 250 test ones) for the dense probe

# key: (paper, backbone, method, method options)
ROWS: dict[str, tuple[str, str, str, dict]] = {
    "slab": ("SLAB", "slab_nano_patch4", "simclr", {}),
    "illama": ("iLLaMA", "illama_nano_patch4", "simclr", {}),
    "convit": ("ConViT", "convit_nano_patch4", "simclr", {}),
    "vit": ("(reference ViT)", "vit_nano_patch4", "simclr", {}),
    "moat": ("MOAT", "moat_nano_cifar", "simclr", {}),
    "raftmlp": ("RaftMLP", "raftmlp_nano_cifar", "simclr", {}),
    "resnet18-narrow": ("(reference ResNet)", "resnet18_narrow_cifar", "simclr", {}),
    "resnet18-narrow-spark": ("(reference ResNet)", "resnet18_narrow_cifar", "spark", {}),
    "ibn-a": ("IBN-Net", "resnet18_ibn_a_narrow_cifar", "simclr", {}),
    "ibn-b": ("IBN-Net", "resnet18_ibn_b_narrow_cifar", "simclr", {}),
    "complex": ("complex CNN", "complex_cnn_nano", "simclr", {}),
    "real-twin": ("complex CNN (real twin)", "real_cnn_nano", "simclr", {}),
    "real-twin-spark": ("complex CNN (real twin)", "real_cnn_nano", "spark", {}),
    "cbnet": ("CBNet", "cbnet_resnet18_narrow_cifar", "simclr", {}),
    "scatnet": ("ScatNet", "scatnet_nano", "simclr", {}),
    "scatsimclr": ("ScatNet (ScatSimCLR)", "scatnet_nano", "pretext_reg", {"jigsaw_weight": 0.0}),
}


def sources() -> tuple[ImageSource, ImageSource]:
    """(pre-training source with its 5,000-image subset, evaluation source with 5,000 training and test images)."""
    full = load_source(DATA, image_size=IMG_SIZE)
    return limit_source(full, TRAIN_IMAGES), limit_source(full, EVAL_IMAGES, EVAL_IMAGES)


def probe(target: EvalTarget, source: ImageSource) -> dict[str, float]:
    context = EvalContext(target, source, torch.device("cpu"))
    knn, linear = evaluate(context, "knn")[0], evaluate(context, "linear")[0]
    return {"knn_top1": knn.value, "knn_k": knn.settings["k"], "linear_top1": linear.value}


def write(kind: str, key: str, values: dict) -> None:
    path = RESULTS / f"{key}.json"
    row = json.loads(path.read_text()) if path.exists() else {}
    row[kind] = {**values, "measured": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2))
    print(key, kind, json.dumps(values))


def trained_kind(epochs: int) -> str:
    """The result key of a pre-trained row: 'trained' at the default budget, 'trained_Nep' at another."""
    return "trained" if epochs == EPOCHS else f"trained_{epochs}ep"


def measure_row(key: str, train: ImageSource, evaluation: ImageSource, reuse: bool, epochs: int = EPOCHS) -> None:
    _, backbone, method, options = ROWS[key]
    out = run_dir(key, epochs)
    warmup = min(1.0, epochs / 3)  # one warm-up epoch of three; a third of a shorter run
    config = build_run_config(method, {"backbone": backbone, "data": DATA, "out": str(out), "img_size": IMG_SIZE,
                                       "max_train": TRAIN_IMAGES},
                              {"epochs": epochs, "batch_size": BATCH_SIZE, "warmup_epochs": warmup}, options)
    started: float | None = time.perf_counter()
    if reuse and (out / "backbone.safetensors").exists():
        losses = [json.loads(line).get("loss") for line in (out / "metrics.jsonl").read_text().splitlines()]
        summary = {"final_loss": next((loss for loss in reversed(losses) if loss is not None), None)}
        started = None  # trained before: only evaluated now
    elif reuse and checkpoint_path(out).exists():
        summary = pretrain(config, resume=True, source=train, show_progress=False)
    else:
        shutil.rmtree(out, ignore_errors=True)
        summary = pretrain(config, source=train, show_progress=False)
    seconds = None if started is None else time.perf_counter() - started
    write(trained_kind(epochs), key, {"backbone": backbone, "method": method, "options": options, "epochs": epochs,
                                      "train_seconds": seconds, "final_loss": summary["final_loss"],
                                      **probe(load_run_target(out), evaluation)})


def measure_random(key: str, evaluation: ImageSource) -> None:
    backbone = ROWS[key][1]
    torch.manual_seed(0)
    target = EvalTarget(create_backbone(backbone, IMG_SIZE, 1), f"timm:{backbone}", IMG_SIZE)
    write("random", key, {"backbone": backbone, **probe(target, evaluation)})


def measure_speed(key: str, evaluation: ImageSource) -> None:
    backbone = ROWS[key][1]
    torch.manual_seed(0)
    target = EvalTarget(create_backbone(backbone, IMG_SIZE, 1), f"timm:{backbone}", IMG_SIZE)
    results = evaluate(EvalContext(target, evaluation, torch.device("cpu")), "speed")
    write("speed", key, {result.metric: result.value for result in results})


def measure_size(key: str) -> None:
    """Parameters and multiply-accumulates per 32 px image (the speed protocol's counts, without its timing)."""
    backbone = ROWS[key][1]
    torch.manual_seed(0)
    target = EvalTarget(create_backbone(backbone, IMG_SIZE, 1), f"timm:{backbone}", IMG_SIZE)
    write("size", key, {"params": count_parameters(target.backbone), "gmacs": count_macs(target) / 1e9})


def run_dir(key: str, epochs: int) -> Path:
    return RUNS / (key if epochs == EPOCHS else f"{key}-{epochs}ep")


def measure_dense(key: str, epochs: int = EPOCHS) -> None:
    """The dense probe (linear per-pixel head on the last feature map) on composed Fashion-MNIST canvases (56 px):
    CBNet is a detection backbone, so its lead backbone's maps are what it offers."""
    backbone = ROWS[key][1]
    source = load_source(f"composed:{DATA}:{DENSE_CANVASES}")
    torch.manual_seed(0)
    random = EvalTarget(create_backbone(backbone, source.image_size[0], 1), f"timm:{backbone}", IMG_SIZE)
    values = {}
    for name, target in (("random", random), ("trained", load_run_target(run_dir(key, epochs)))):
        results = evaluate(EvalContext(target, source, torch.device("cpu")), "dense")
        values.update({f"{name}_{r.metric}": r.value for r in results})
    write("dense", key, {"backbone": backbone, "canvases": DENSE_CANVASES, "epochs": epochs, **values})


def selected(text: str) -> list[str]:
    keys = [k for k in text.split(",") if k] if text != "all" else list(ROWS)
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; rows: {', '.join(ROWS)}")
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="", help="rows to pre-train and evaluate (comma list or 'all')")
    parser.add_argument("--random", default="", help="rows whose random-init baseline to evaluate")
    parser.add_argument("--speed", default="", help="rows to time (run under flock /tmp/pretrainlab-bench.lock)")
    parser.add_argument("--size", default="", help="rows whose parameters and GMACs to count (no timing)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="pre-training epochs of --rows (default 3)")
    parser.add_argument("--dense", default="", help="rows to measure with the dense probe (composed canvases)")
    parser.add_argument("--reuse", action="store_true", help="evaluate finished runs, resume interrupted ones")
    parser.add_argument("--render", action="store_true", help="write docs/architectures.md")
    args = parser.parse_args()
    if args.rows or args.random or args.speed:  # (--dense loads its own data)
        train, evaluation = sources()
        backbones_done: set[str] = set()
        for key in selected(args.random):  # one random baseline per architecture, stored with its first row
            if ROWS[key][1] not in backbones_done:
                measure_random(key, evaluation)
                backbones_done.add(ROWS[key][1])
        for key in selected(args.rows):
            measure_row(key, train, evaluation, args.reuse, args.epochs)
        timed: set[str] = set()
        for key in selected(args.speed):  # one timing per architecture
            if ROWS[key][1] not in timed:
                measure_speed(key, evaluation)
                timed.add(ROWS[key][1])
    counted: set[str] = set()
    for key in selected(args.size):  # one count per architecture
        if ROWS[key][1] not in counted:
            measure_size(key)
            counted.add(ROWS[key][1])
    for key in selected(args.dense):
        measure_dense(key, args.epochs)
    if args.render:
        from bench.architectures_render import render

        render()


if __name__ == "__main__":
    main()
