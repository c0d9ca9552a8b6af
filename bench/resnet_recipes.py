"""Issue 9's sweep: why SimCLR on resnet18 ended below a random resnet18, one difference at a time.

Each variant is a short pre-training with the online kNN monitor (k=20, T=0.07, eval-mode features of
whole images) every 2 epochs, either by pretrainlab (`pretrain`, the recipe plus the variant's flags)
or by the independent minimal SimCLR of bench/simclr_reference.py. Rows are written one JSON file per
variant to bench/results/resnet_recipes/ and rendered into docs/resnet_recipes.md:

    python bench/resnet_recipes.py --variants defaults,warmup-fix     # measure these rows
    python bench/resnet_recipes.py --list                             # the variants
    python bench/resnet_recipes.py --render                           # write the table

A finished variant is skipped unless --again; run the script nice'd in the background (each row is a few
CPU-minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.` imports when run as a script
from bench.common import shared_data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "resnet_recipes"
RUNS = ROOT / "runs" / "bench-resnet"
TABLE = ROOT / "docs" / "resnet_recipes.md"
CIFAR = shared_data("cifar10_jpeg.npz")
FASHION = shared_data("fashion_mnist.npz")  # beside the checkout or, from a worktree, two levels up
BASE = {"backbone": "resnet18", "data": "builtin", "img_size": 32, "epochs": 4, "batch_size": 128}

# name -> (engine, settings); settings: top-level keys of BASE, "train" flags and "options" for pretrainlab,
# "args" (command-line switches) for the reference. "old" pins the recipe as it was before issue 9.
OLD_TRAIN = {"optimizer": "sgd", "lr": 0.06, "lr_scaling": "linear", "warmup_epochs": 10.0, "weight_decay": 5e-4}
OLD_OPTIONS = {"temperature": 0.5, "hidden_dim": 512, "views.crop_min_scale": 0.08, "views.jitter_strength": 0.5,
               "views.flip_p": 0.5}  # pinned: builtin now drops flips by default (digits are not mirror-invariant)


def old(epochs: int = 8, train: dict | None = None, options: dict | None = None,
        **settings: object) -> tuple[str, dict]:
    """The recipe as it was before issue 9, with some settings changed."""
    return ("pretrainlab", {"epochs": epochs, "train": {**OLD_TRAIN, **(train or {})},
                            "options": {**OLD_OPTIONS, **(options or {})}, **settings})


def new(epochs: int = 3, options: dict | None = None, **settings: object) -> tuple[str, dict]:
    """The current recipe (warm-up a tenth of the run) with some method options changed; kNN every epoch."""
    return ("pretrainlab", {"epochs": epochs, "knn_every": 1, "options": options or {}, **settings})


# The setting issue 9 found (lr 0.6 per 256 = 0.3 at batch 128, a 3-epoch warm-up, crop (0.5, 1), no flips on digits)
FOUND_TRAIN, FOUND_OPTIONS = {"lr": 0.6, "warmup_epochs": 3.0}, {"views.crop_min_scale": 0.5}
FOUND_REFERENCE = ["--lr", "0.3", "--warmup-epochs", "3", "--crop-min", "0.5", "--flip-p", "0"]

VARIANTS: dict[str, tuple[str, dict]] = {
    "old-defaults": old(epochs=4),  # epochs 2 and 4 of an 8-epoch run are the same (still in warm-up)
    "warmup10%": old(train={"warmup_epochs": 0.8}),
    "warmup10%-lr0.03": old(train={"warmup_epochs": 0.8, "lr": 0.03}),
    "warmup10%-lr0.6": old(train={"warmup_epochs": 0.8, "lr": 0.6}),
    "warmup10%-crop0.3": old(train={"warmup_epochs": 0.8}, options={"views.crop_min_scale": 0.3}),
    "warmup10%-crop0.5": old(train={"warmup_epochs": 0.8}, options={"views.crop_min_scale": 0.5}),
    "warmup10%-lr0.6-crop0.3": old(train={"warmup_epochs": 0.8, "lr": 0.6}, options={"views.crop_min_scale": 0.3}),
    "warmup10%-adamw1e-3": old(train={"warmup_epochs": 0.8, "optimizer": "adamw", "lr": 1e-3, "lr_scaling": "none",
                                      "weight_decay": 1e-4}),
    "warmup10%-lars0.4": old(train={"warmup_epochs": 0.8, "optimizer": "lars", "lr": 0.4, "lars_trust": 0.02,
                                    "weight_decay": 1e-5}),
    "crop0.3-t0.1": old(train={"warmup_epochs": 0.8}, options={"views.crop_min_scale": 0.3, "temperature": 0.1}),
    "crop0.3-head2048": old(train={"warmup_epochs": 0.8}, options={"views.crop_min_scale": 0.3, "hidden_dim": 2048}),
    "crop0.3-24ep": old(epochs=24, knn_every=4, train={"warmup_epochs": 2.4}, options={"views.crop_min_scale": 0.3}),
    "crop0.3-noflip": old(train={"warmup_epochs": 0.8}, options={"views.crop_min_scale": 0.3, "views.flip_p": 0.0}),
    "crop0.3-3layers": old(train={"warmup_epochs": 0.8}, options={"views.crop_min_scale": 0.3, "projection_layers": 3}),
    "crop0.5-noflip": old(train={"warmup_epochs": 0.8}, options={"views.crop_min_scale": 0.5, "views.flip_p": 0.0}),
    "crop0.8-noflip": old(train={"warmup_epochs": 0.8}, options={"views.crop_min_scale": 0.8, "views.flip_p": 0.0}),
    "reference-lr0.3": ("reference", {"epochs": 2, "args": ["--lr", "0.3", "--warmup-epochs", "0.5",
                                                           "--knn-every", "1"]}),
    "crop0.8-noflip-3ep": new(options={"views.crop_min_scale": 0.8, "views.flip_p": 0.0}),
    "crop0.8-3ep": new(options={"views.crop_min_scale": 0.8, "views.flip_p": 0.5}),
    "crop0.5-noflip-6ep": new(epochs=6, options={"views.crop_min_scale": 0.5, "views.flip_p": 0.0}),
    "crop0.8-6ep": new(epochs=6, options={"views.crop_min_scale": 0.8}),  # builtin: no flips by default now
    "fashion-defaults-3ep": new(data=f"npz:{FASHION}", max_train=2000),
    "fashion-crop0.8-3ep": new(data=f"npz:{FASHION}", max_train=2000, options={"views.crop_min_scale": 0.8}),
    "crop0.8-noflip-12ep": new(epochs=12, options={"views.crop_min_scale": 0.8, "views.flip_p": 0.0}),
    "crop0.8-noflip-b64-6ep": new(epochs=6, batch_size=64, options={"views.crop_min_scale": 0.8, "views.flip_p": 0.0}),
    "reference-lr0.03-crop0.8-noflip-6ep": ("reference", {"epochs": 6, "args": [
        "--lr", "0.03", "--warmup-epochs", "0.6", "--crop-min", "0.8", "--flip-p", "0", "--knn-every", "1"]}),
    "reference-lr0.03-crop0.2-noflip-6ep": ("reference", {"epochs": 6, "args": [
        "--lr", "0.03", "--warmup-epochs", "0.6", "--crop-min", "0.2", "--flip-p", "0", "--knn-every", "1"]}),
    # longer reference runs: which settings climb past the random resnet18 (the reporter's reached 94.1 in 12.6 epochs)
    **{f"reference-{name}-12ep": ("reference", {"epochs": 12, "args": [
        *args, "--flip-p", "0", "--knn-every", "2"]}) for name, args in {
        "lr0.03-crop0.2": ["--lr", "0.03", "--warmup-epochs", "1.2", "--crop-min", "0.2"],
        "lr0.3-crop0.2": ["--lr", "0.3", "--warmup-epochs", "1.2", "--crop-min", "0.2"],
        "lr0.3-crop0.5": ["--lr", "0.3", "--warmup-epochs", "1.2", "--crop-min", "0.5"],
        "lr0.1-crop0.5": ["--lr", "0.1", "--warmup-epochs", "1.2", "--crop-min", "0.5"],
        "adamw1e-3-crop0.2": ["--optimizer", "adamw", "--lr", "0.001", "--weight-decay", "1e-4", "--warmup-epochs",
                              "1.2", "--crop-min", "0.2"],
        "lr0.3-crop0.2-t0.2": ["--lr", "0.3", "--warmup-epochs", "1.2", "--crop-min", "0.2", "--temperature", "0.2"],
    }.items()},
    "reference-lr0.3-crop0.5-30ep": ("reference", {"epochs": 30, "args": [*FOUND_REFERENCE, "--knn-every", "5"]}),
    "reference-lr0.3-crop0.5-b256-12ep": ("reference", {"epochs": 12, "args": [
        "--lr", "0.6", "--batch-size", "256", "--warmup-epochs", "1.2", "--crop-min", "0.5", "--flip-p", "0",
        "--knn-every", "2"]}),
    # pretrainlab at the reference's best setting (lr 0.6 per 256 = 0.3 at batch 128, a 3-epoch warm-up, crop 0.5)
    "lr0.6-warmup3-crop0.5-30ep": new(epochs=30, knn_every=5, train=FOUND_TRAIN, options=FOUND_OPTIONS),
    # the 12-epoch reference run with the 30-epoch run's 3-epoch warm-up: is the warm-up what made the difference?
    "reference-lr0.3-crop0.5-warmup3-12ep": ("reference", {"epochs": 12,
                                                           "args": [*FOUND_REFERENCE, "--knn-every", "2"]}),
    # bisection at that setting, first 5 epochs of the 30-epoch schedule: one pretrainlab part swapped in at a time
    **{f"reference-lr0.3-crop0.5-30ep-stop5{suffix}": ("reference", {"epochs": 30, "args": [
        *FOUND_REFERENCE, "--knn-every", "5", "--stop-epoch", "5", *switches]}) for suffix, switches in {
        "": [], "-bn-concat": ["--bn", "concat"], "-pretrainlab-views": ["--views", "pretrainlab"],
        "-channels-last": ["--channels-last"]}.items()},
    # does the setting carry over: Fashion-MNIST subset (flips kept), and tinycnn on builtin against the default
    "fashion-lr0.6-warmup3-crop0.5-30ep": new(epochs=30, knn_every=5, data=f"npz:{FASHION}", max_train=2000,
                                              train=FOUND_TRAIN, options=FOUND_OPTIONS),
    # the subset has 15 steps an epoch: a 3-epoch warm-up is 45 steps, half of builtin's 93; twice the run, 90 steps
    "fashion-lr0.6-warmup6-crop0.5-60ep": new(epochs=60, knn_every=10, data=f"npz:{FASHION}", max_train=2000,
                                              train={**FOUND_TRAIN, "warmup_epochs": 6.0}, options=FOUND_OPTIONS),
    "fashion-lr0.6-warmup6-crop0.2-60ep": new(epochs=60, knn_every=10, data=f"npz:{FASHION}", max_train=2000,
                                              train={**FOUND_TRAIN, "warmup_epochs": 6.0},
                                              options={"views.crop_min_scale": 0.2}),
    # does the crop that suits 28-px digits suit 32-px colour photos? CIFAR-10 (5,000 training images), tinycnn
    **{f"cifar-tinycnn-{name}-20ep": new(epochs=20, knn_every=5, backbone="tinycnn", data=f"npz:{CIFAR}",
                                         max_train=5000, train=train, options=options) for name, (train, options) in {
        "defaults": ({"lr": 0.06, "warmup_epochs": 2.0}, {"views.crop_min_scale": 0.08}),  # the recipe before
        "lr0.6-warmup3-crop0.08": (FOUND_TRAIN, {"views.crop_min_scale": 0.08}),
        "lr0.6-warmup3-crop0.5": (FOUND_TRAIN, FOUND_OPTIONS)}.items()},
    # the new recipe (lr 0.6 per 256, warm-up at least 100 steps) over a test-sized budget
    "lr0.6-min100steps-crop0.5-6ep": new(epochs=6, knn_every=1, train={"lr": 0.6, "warmup_min_steps": 100},
                                         options=FOUND_OPTIONS),
    "lr0.6-min100steps-crop0.5-12ep": new(epochs=12, knn_every=2, train={"lr": 0.6, "warmup_min_steps": 100},
                                          options=FOUND_OPTIONS),
    # the other SGD recipes at a low learning rate (lightly's long-run values): does ten times the rate, with a
    # 3-epoch (93-step) warm-up, help them too in a short run? tinycnn on builtin, 20 epochs
    **{f"tinycnn-{method}-{name}-20ep": new(epochs=20, knn_every=5, backbone="tinycnn", method=method, train=train)
       for method, lr in {"byol": 0.06, "mocov2": 0.03, "simsiam": 0.03}.items()
       for name, train in {"recipe": {}, f"lr{lr * 10:g}-warmup3": {"lr": lr * 10, "warmup_epochs": 3.0}}.items()},
    # the recipe as now packaged (lr 0.6, warm-up >= 100 steps, crops >= 20 px a side), no flags, on 10,000
    # Fashion-MNIST images (the methods table's subset; 78 steps an epoch): the reporter's gauntlet setting
    "fashion10k-recipe-15ep": new(epochs=15, knn_every=5, data=f"npz:{FASHION}", max_train=10000,
                                  train={"lr": 0.6, "warmup_min_steps": 100}),
    "tinycnn-defaults-20ep": new(epochs=20, knn_every=5, backbone="tinycnn"),
    "tinycnn-lr0.6-warmup3-crop0.5-20ep": new(epochs=20, knn_every=5, backbone="tinycnn", train=FOUND_TRAIN,
                                              options=FOUND_OPTIONS),
    # the packaged recipe, no flags, on the CIFAR-stem resnet18 (issue 9's third backbone): builtin over the
    # resnet18 learning test's budget, then the 10,000 Fashion-MNIST images over the gauntlet's 15 epochs
    "cifar-recipe-12ep": new(epochs=12, knn_every=2, backbone="resnet18_cifar"),
    "fashion10k-cifar-recipe-15ep": new(epochs=15, knn_every=5, backbone="resnet18_cifar", data=f"npz:{FASHION}",
                                        max_train=10000),
    "fashion2k-cifar-recipe-20ep": new(epochs=20, knn_every=5, backbone="resnet18_cifar", data=f"npz:{FASHION}",
                                       max_train=2000),
    "cifar-defaults-4ep": new(epochs=4, backbone="resnet18_cifar"),
    "cifar-crop0.8-4ep": new(epochs=4, backbone="resnet18_cifar", options={"views.crop_min_scale": 0.8}),
    "crop0.8-noflip-t1.0-4ep": new(epochs=4, options={"views.crop_min_scale": 0.8, "views.flip_p": 0.0,
                                                      "temperature": 1.0}),
}


def run_pretrainlab(name: str, settings: dict) -> list[dict]:
    from pretrainlab.pipeline import build_run_config, pretrain, saved_run_config
    from pretrainlab.train.checkpoint import checkpoint_path

    out = RUNS / name
    overrides = {key: settings.get(key, value) for key, value in BASE.items() if key not in ("epochs", "batch_size")}
    train = {"epochs": settings.get("epochs", BASE["epochs"]),
             "batch_size": settings.get("batch_size", BASE["batch_size"]), "knn_every": settings.get("knn_every", 2),
             **settings.get("train", {})}
    config = build_run_config(settings.get("method", "simclr"),
                              {**overrides, "out": str(out), "max_train": settings.get("max_train")},
                              train, settings.get("options", {}))
    resumable = checkpoint_path(out).exists() and saved_run_config(out) == config
    if not resumable and out.exists():  # a fresh run: nothing of an earlier attempt may mix into its logs
        import shutil

        shutil.rmtree(out)
    if not (out / "backbone.safetensors").exists():
        pretrain(config, resume=resumable, show_progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{"epoch": r["epoch"], "knn_top1": round(r["knn_top1"], 2)} for r in records if "knn_top1" in r]


def run_reference(settings: dict) -> list[dict]:
    command = [sys.executable, str(ROOT / "bench" / "simclr_reference.py"), "--backbone",
               settings.get("backbone", BASE["backbone"]), "--data", settings.get("data", BASE["data"]),
               "--epochs", str(settings.get("epochs", BASE["epochs"])), "--img-size",
               str(settings.get("img_size", BASE["img_size"])), "--batch-size",
               str(settings.get("batch_size", BASE["batch_size"])), *settings.get("args", [])]
    if settings.get("max_train"):
        command += ["--max-train", str(settings["max_train"])]
    lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()
    return [record for line in lines if "knn_top1" in (record := json.loads(line))]


def measure(name: str) -> dict:
    engine, settings = VARIANTS[name]
    started = time.perf_counter()
    curve = run_pretrainlab(name, settings) if engine == "pretrainlab" else run_reference(settings)
    row = {"variant": name, "engine": engine, "settings": settings, "curve": curve,
           "minutes": round((time.perf_counter() - started) / 60, 1), "measured": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(row, indent=2))
    print(json.dumps(row), flush=True)
    return row


def compact(settings: dict) -> dict:
    """An "old" row's settings as what differs from the recipe before issue 9 (marked old: true)."""
    train, options = settings.get("train"), settings.get("options", {})
    if train is None or "warmup_epochs" not in train:
        return settings
    rest = {key: value for key, value in settings.items() if key not in ("train", "options")}
    changed = {**{k: v for k, v in train.items() if OLD_TRAIN.get(k) != v},
               **{k: v for k, v in options.items() if OLD_OPTIONS.get(k) != v}}
    return {"old": True, **rest, **changed}


def render() -> None:
    rows = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))]
    epochs = sorted({int(point["epoch"]) for row in rows for point in row["curve"]})
    header = " | ".join(f"ep {e}" for e in epochs)
    lines = [f"| variant | engine | data, backbone | settings | {header} | minutes |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in epochs) + " | --- |"]
    for row in rows:
        settings = dict(row["settings"])
        data = settings.pop("data", BASE["data"])
        data = Path(data).name if data.endswith(".npz") else data
        where = f"{data}, {settings.pop('backbone', BASE['backbone'])}"
        if settings.get("max_train"):
            where += f" ({settings.pop('max_train')} train)"
        settings = compact(settings)
        by_epoch = {int(point["epoch"]): point["knn_top1"] for point in row["curve"]}
        cells = [f"{by_epoch[e]:.1f}" if e in by_epoch else "" for e in epochs]
        lines.append(f"| {row['variant']} | {row['engine']} | {where} | `{json.dumps(settings)}` | "
                     + " | ".join(cells) + f" | {row['minutes'] if row['minutes'] is not None else '-'} |")
    text = TABLE.read_text() if TABLE.exists() else "# resnet recipes\n\n<!-- table -->\n<!-- /table -->\n"
    start, end = text.index("<!-- table -->"), text.index("<!-- /table -->")
    TABLE.write_text(text[: start + len("<!-- table -->")] + "\n" + "\n".join(lines) + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="")
    parser.add_argument("--again", action="store_true", help="re-measure variants that have a row")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    if args.list:
        for name, (engine, settings) in VARIANTS.items():
            print(f"{name:28s} {engine:12s} {json.dumps(settings)}")
    for name in filter(None, args.variants.split(",")):
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name}; --list shows them")
        if args.again or not (RESULTS / f"{name}.json").exists():
            measure(name)
    if args.render:
        render()


if __name__ == "__main__":
    main()
