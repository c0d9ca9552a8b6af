"""Storage-efficient token datasets (SeiT++, arXiv 2312.10105), measured on Fashion-MNIST (and CIFAR-10 storage).

Steps (each skips what is already done, so the study resumes; run them one at a time in the study lane):
- `tokenize`: a 256-code VQ-VAE (downsample 2: 7x7 grids) trained on a class-balanced 5,000-image subset of
  Fashion-MNIST's training split, all 70,000 images encoded; `tokenize_cifar`: the same for CIFAR-10 (JPEG q75,
  8x8 grids), for its storage figures against the JPEG files.
- `mtm`, `mtm_noaug`: masked token modelling on the Fashion-MNIST token file (vit_token_nano), with TokenAdapt and
  ColorAdapt (the recipe's 0.5 / 0.25) and without them.
- `mae`: MAE on the pixels of the same 5,000 images at the same budget (vit_nano_patch4 at 28 px: the same
  encoder width and depth and the same 49-token sequence).
- `eval`: kNN and linear top-1 of every run and of both random inits (gauntlet, class-balanced 5,000 train /
  2,000 test images of the evaluated data, seed 0), rows in bench/results/tokens/.
- `render`: docs/token_datasets.md's tables from the rows.

    python bench/token_study.py --steps tokenize,mtm,mae,eval,render --epochs 20
    python bench/token_study.py --steps tokenize_cifar,mtm_noaug,eval,render --epochs 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pretrainlab.cli import main  # noqa: E402
from pretrainlab.data.tokens.dataset import tokenize_dataset  # noqa: E402
from pretrainlab.data.tokens.training import TokenizeConfig  # noqa: E402
from pretrainlab.pipeline import gauntlet  # noqa: E402

DATA = Path("/work/shared/data")
FASHION = f"npz:{DATA / 'fashion_mnist.npz'}"
CIFAR = f"npz:{DATA / 'cifar10_jpeg.npz'}"
RUNS = ROOT / "runs" / "token_study"
RESULTS = ROOT / "bench" / "results" / "tokens"
DOC = ROOT / "docs" / "token_datasets.md"
TOKENS = {"fashion": RUNS / "fashion_mnist_k256.npz", "cifar": RUNS / "cifar10_k256.npz"}
TRAIN_IMAGES, EVAL_TRAIN, EVAL_TEST, SEED = 5_000, 5_000, 2_000, 0
VQ_STEPS, ADAPT_STEPS = 600, 200  # a CPU budget: the study lane is shared by every helper
PRETRAIN = {  # name: (data, method, backbone, extra flags)
    "mtm": ("tokens", "mtm", "vit_token_nano", []),
    "mtm_noaug": ("tokens", "mtm", "vit_token_nano", ["--option", "token_adapt_p=0", "--option", "color_adapt_p=0"]),
    "mae": ("pixels", "mae", "vit_nano_patch4", ["--img-size", "28"]),
}


def tokenize_step(name: str) -> None:
    if TOKENS[name].exists():
        return
    spec = {"fashion": FASHION, "cifar": CIFAR}[name]
    config = TokenizeConfig(vq_steps=VQ_STEPS, adapt_steps=ADAPT_STEPS, seed=SEED)
    summary = tokenize_dataset(spec, TOKENS[name], config, max_train=TRAIN_IMAGES)
    (RESULTS / f"tokenize-{name}.json").write_text(json.dumps(summary, indent=1) + "\n")


def pretrain_step(name: str, epochs: int, batch_size: int) -> None:
    data, method, backbone, extra = PRETRAIN[name]
    out = RUNS / name
    if (out / "backbone.safetensors").exists():
        return
    spec = f"tokens:{TOKENS['fashion']}" if data == "tokens" else FASHION
    started = time.perf_counter()
    code = main(["pretrain", "--method", method, "--backbone", backbone, "--data", spec, "--max-train",
                 str(TRAIN_IMAGES), "--epochs", str(epochs), "--batch-size", str(batch_size), "--seed", str(SEED),
                 "--knn-every", "0", "--no-progress", "--out", str(out), *extra])
    if code != 0:
        raise SystemExit(f"pretrain {name} failed ({code})")
    (RESULTS / f"pretrain-{name}.json").write_text(json.dumps(
        {"name": name, "epochs": epochs, "batch_size": batch_size, "wall_seconds": time.perf_counter() - started,
         "cpu_note": "OMP_NUM_THREADS=1, nice 10, on 2 cores shared with other jobs"}, indent=1) + "\n")


def eval_step() -> None:
    targets = [(name, str(RUNS / name), PRETRAIN[name][0]) for name in PRETRAIN if (RUNS / name).exists()]
    targets += [("random_token", "timm:vit_token_nano", "tokens"), ("random_pixel", "timm:vit_nano_patch4", "pixels")]
    for name, spec, data in targets:
        row = RESULTS / f"eval-{name}.json"
        if row.exists():
            continue
        data_spec = f"tokens:{TOKENS['fashion']}" if data == "tokens" else FASHION
        outcome = gauntlet(spec, data_spec, ["knn", "linear"], seeds=1, store=RUNS / "store.db",
                           img_size=28 if data == "pixels" else None, max_train=EVAL_TRAIN, max_test=EVAL_TEST)
        results = [{"protocol": r.protocol, "metric": r.metric, "value": r.value, "seconds": r.seconds,
                    "settings": r.settings} for r in outcome.summary()]
        row.write_text(json.dumps({"name": name, "spec": spec, "data": data_spec, "results": results},
                                  indent=1, default=str) + "\n")


def main_study() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", required=True,
                        help="comma list: tokenize, tokenize_cifar, mtm, mtm_noaug, mae, eval, render")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for step in args.steps.split(","):
        if step == "tokenize":
            tokenize_step("fashion")
        elif step == "tokenize_cifar":
            tokenize_step("cifar")
        elif step in PRETRAIN:
            pretrain_step(step, args.epochs, args.batch_size)
        elif step == "eval":
            eval_step()
        elif step == "render":
            from token_study_render import render

            render(RESULTS, DOC)
        else:
            raise SystemExit(f"unknown step {step}")


if __name__ == "__main__":
    main_study()
