"""Guidance at small scale ("Training the Untrainable", arXiv 2410.20035): its two headline effects on Fashion-MNIST.

    python bench/guidance_study.py --rows all        # or a comma list of the rows below (resumable: --reuse)

1. A deep plain CNN (43 convolutions, no shortcuts) trains worse than its residual twin; guided by the twin
   (untrained, or trained first by row `residual`), it should close the gap.
2. A fully connected network overfits a small training set; guided by an untrained CNN, it should overfit less.

Supervised training at 28 px with the guidance recipe's optimiser (SGD, lr 0.1 per 256 scaled, one warm-up epoch),
seed 0. Measured: the mean training accuracy of the last epoch (from metrics.jsonl), the online kNN test accuracy
during training (k by the DESIGN rule, on a fixed test subset: --test-images, default 5,000), and kNN / linear
probe top-1 on frozen features (the training subset as probe training set, the same test subset). --epochs and
--images shrink a row's budget (recorded with the row).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from bench.architectures_table import DATA, probe
from pretrainlab.data import load_source
from pretrainlab.data.subsets import limit_source
from pretrainlab.eval.target import load_run_target
from pretrainlab.pipeline import build_run_config, pretrain

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "guidance"
RUNS = ROOT / "runs" / "bench-guidance"
IMG_SIZE = 28

# key: (experiment, target backbone, guide ("" = unguided), train images, epochs, the supervised task's options)
ROWS: dict[str, tuple[str, str, str, int, int, dict]] = {
    "residual": ("deep CNN", "deep_residual_cnn", "", 5_000, 3, {}),
    "plain": ("deep CNN", "deep_plain_cnn", "", 5_000, 3, {}),
    "plain-guided-untrained": ("deep CNN", "deep_plain_cnn", "timm:deep_residual_cnn", 5_000, 3, {}),
    "plain-guided-trained": ("deep CNN", "deep_plain_cnn", str(RUNS / "residual"), 5_000, 3, {}),
    "fcn": ("FCN", "fcn_4x1024", "", 1_000, 30, {}),
    "fcn-guided-untrained": ("FCN", "fcn_4x1024", "timm:resnet18_narrow_cifar", 1_000, 30, {}),
    # without crops (flips only) the FCN memorises its 1,000 images: the overfitting the paper's guide reduces
    "fcn-nocrop": ("FCN, no crops", "fcn_4x1024", "", 1_000, 30, {"crop_min_scale": 1.0}),
    "fcn-nocrop-guided-untrained": ("FCN, no crops", "fcn_4x1024", "timm:resnet18_narrow_cifar", 1_000, 30,
                                    {"crop_min_scale": 1.0}),
}


def run_row(key: str, reuse: bool, epochs_override: int = 0, images_override: int = 0,
            test_images: int = 5_000) -> None:
    experiment, backbone, guide, images, epochs, options = ROWS[key]
    epochs, images = epochs_override or epochs, images_override or images
    out = RUNS / key
    method = "guidance" if guide else "supervised"
    method_options = {"guide": guide, "base_options": options} if guide else options
    config = build_run_config(method, {"backbone": backbone, "data": DATA, "out": str(out), "img_size": IMG_SIZE,
                                       "max_train": images},
                              {"epochs": epochs, "batch_size": 64, "optimizer": "sgd", "lr": 0.1, "warmup_epochs": 1.0,
                               "knn_every": max(1, epochs // 10), "log_every": 5}, method_options)
    full = load_source(DATA, image_size=IMG_SIZE)
    train = limit_source(full, images, test_images)  # the kNN monitor and probes score a fixed test subset
    started = time.perf_counter()
    if not (reuse and (out / "backbone.safetensors").exists()):
        shutil.rmtree(out, ignore_errors=True)
        pretrain(config, source=train, show_progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last_epoch = [r["train_accuracy"] for r in records if "train_accuracy" in r and r["epoch"] > epochs - 1]
    curve = [(r["epoch"], round(r["knn_top1"], 2)) for r in records if "knn_top1" in r]
    row = {"experiment": experiment, "backbone": backbone, "guide": guide, "train_images": images, "epochs": epochs,
           "test_images": test_images,
           "options": options, "train_seconds": time.perf_counter() - started,
           "last_epoch_train_accuracy": 100 * sum(last_epoch) / max(len(last_epoch), 1),
           "final_loss": [r["loss"] for r in records if "loss" in r][-1],
           "knn_test_by_epoch": curve,
           **probe(load_run_target(out), train),
           "measured": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{key}.json").write_text(json.dumps(row, indent=2))
    print(key, json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="all", help=f"comma list of {', '.join(ROWS)} or 'all'")
    parser.add_argument("--epochs", type=int, default=0, help="override the rows' epochs (0 = each row's own)")
    parser.add_argument("--images", type=int, default=0, help="override the rows' training images (0 = own)")
    parser.add_argument("--test-images", type=int, default=5_000, help="test images for the kNN monitor and probes")
    parser.add_argument("--reuse", action="store_true", help="re-evaluate finished run folders instead of training")
    args = parser.parse_args()
    torch.manual_seed(0)
    for key in (list(ROWS) if args.rows == "all" else args.rows.split(",")):
        run_row(key, args.reuse, args.epochs, args.images, args.test_images)


if __name__ == "__main__":
    main()
