"""Every method, one budget: pre-train on Fashion-MNIST, then kNN and linear probe, against random init.

Rows are written one JSON file per method to bench/results/methods/, so methods can be (re)measured
separately and the table in docs/methods.md is rendered from whatever rows exist:

    python bench/methods_table.py --methods simclr,rotnet,mae     # measure these rows
    python bench/methods_table.py --random                        # the random-init rows
    python bench/methods_table.py --render                        # write docs/methods.md
    python bench/methods_table.py --methods simclr --epochs 50 --seed 1 --reuse --skip-done   # a longer budget

Rows at the table's own budget (EPOCHS epochs, seed 0) are RESULTS/NAME.json; any other budget or seed is
RESULTS/epochsE/NAME-seedS.json with its run folder runs/bench-methods/epochsE/NAME-seedS, so a longer or
reseeded run never overwrites a table row. `--reuse` resumes a killed run from its last checkpoint and
`--skip-done` skips a row whose result file exists, which makes a queue of rows resumable
(bench/methods_budget_queue.sh); a row another process is measuring (its lock file, runs/bench-methods/KEY.lock,
is held) is skipped too, so two queues started side by side share the rows instead of training one twice;
`--render` also writes the longer budgets' table (bench/methods_budget.py).

The budget (identical for every row): a fixed stratified subset of TRAIN_IMAGES Fashion-MNIST training
images for pre-training, EPOCHS epochs of BATCH_SIZE, each method's own recipe for optimiser and
learning rate (warm-up shortened to 1 epoch, unless the recipe sets a floor in steps: SimCLR's and SimSiam's 100),
then kNN (k=200, T=0.07) and a linear probe on frozen features of the full 60,000-image training split,
scored on the 10,000 test images.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.` imports when run as a script

from bench.common import replace_block, shared_data  # noqa: E402
from bench.methods_budget import render_budgets  # noqa: E402
from pretrainlab.backbones import create_backbone  # noqa: E402
from pretrainlab.data import load_source  # noqa: E402
from pretrainlab.data.source import ImageSource  # noqa: E402
from pretrainlab.data.splits import stratified_indices  # noqa: E402
from pretrainlab.eval import EvalContext, EvalTarget, evaluate  # noqa: E402
from pretrainlab.eval.target import load_run_target  # noqa: E402
from pretrainlab.methods import METHODS  # noqa: E402
from pretrainlab.pipeline import build_run_config, pretrain, saved_run_config  # noqa: E402
from pretrainlab.train.checkpoint import checkpoint_path  # noqa: E402
from pretrainlab.train.config import RunConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# the offline copy beside the checkout (/work/shared for /work/main, one level up for a worktree in /work/wt/NAME)
DATA = shared_data("fashion_mnist.npz")
RESULTS = ROOT / "bench" / "results" / "methods"
TABLE = ROOT / "docs" / "methods.md"
TRAIN_IMAGES = 10_000
EPOCHS = 10
BATCH_SIZE = 256
CNN_BACKBONE = "tinycnn"
VIT_BACKBONE = "vit_nano_patch4"


def load_data() -> tuple[ImageSource, ImageSource]:
    """(full labelled source for evaluation, pre-training subset of the training split)."""
    if not DATA.exists():
        sys.exit(f"missing {DATA}: this benchmark reads the offline Fashion-MNIST copy in ../shared/data")
    full = load_source(f"npz:{DATA}")
    keep, _ = stratified_indices(full.train.labels, 1 - TRAIN_IMAGES / len(full.train), seed=0)
    subset = ImageSource(full.spec, full.train.subset(keep), full.test, full.classes,
                         split_note=f"stratified {len(keep)}-image pre-training subset, seed 0")
    return full, subset


def evaluate_target(target: EvalTarget, source: ImageSource) -> dict[str, float]:
    context = EvalContext(target, source, torch.device("cpu"))
    knn, linear = evaluate(context, "knn")[0], evaluate(context, "linear")[0]
    return {"knn_top1": knn.value, "knn_k": knn.settings["k"], "linear_top1": linear.value}


def row_key(name: str, tag: str = "", epochs: int = EPOCHS, seed: int = 0) -> str:
    """The row's path under RESULTS (without .json) and under runs/bench-methods: the table's own budget
    keeps its plain name; another budget or seed goes to its own folder, so it never overwrites a table row."""
    stem = file_name(name) + (f"-{tag}" if tag else "")
    return stem if (epochs, seed) == (EPOCHS, 0) else f"epochs{epochs}/{stem}-seed{seed}"


@contextlib.contextmanager
def row_lock(key: str) -> Iterator[bool]:
    """Holds an exclusive lock on the row `key` while the block runs; yields False, holding nothing, when another
    process has it. flock is released by the kernel when its holder dies, so a killed run never leaves its row
    locked (a stale lock file is harmless)."""
    path = ROOT / "runs" / "bench-methods" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def measure_method(name: str, full: ImageSource, subset: ImageSource, options: dict, epochs: int,
                   reuse: bool = False, tag: str = "", seed: int = 0, backbone: str | None = None) -> dict:
    """Pre-trains and evaluates one row. With `reuse`, a finished run folder of the same configuration is only
    evaluated and an interrupted one resumed; its seconds per epoch are then left for bench/methods_speed.py.

    `options` are method options, and training settings as "train.KEY" (e.g. train.optimizer=adamw);
    `backbone` replaces the table's choice (tinycnn, or vit_nano_patch4 for methods that need tokens).
    """
    method_class = METHODS.get(name)
    backbone = backbone or (VIT_BACKBONE if method_class.needs_tokens else CNN_BACKBONE)
    out = ROOT / "runs" / "bench-methods" / row_key(name, tag, epochs, seed)
    train = {key.removeprefix("train."): value for key, value in options.items() if key.startswith("train.")}
    config = build_run_config(
        name, {"backbone": backbone, "data": full.spec, "out": str(out)},
        {"epochs": epochs, "batch_size": BATCH_SIZE, "knn_every": 0, "seed": seed, **train},
        {key: value for key, value in options.items() if not key.startswith("train.")},
    )
    if config.train.warmup_min_steps == 0 and "warmup_epochs" not in train:  # a recipe's floor in steps stands
        config = replace(config, train=replace(config.train, warmup_epochs=1.0))
    started = time.perf_counter()
    finished, interrupted = (out / "backbone.safetensors").exists(), checkpoint_path(out).exists()
    saved = saved_run_config(out) if reuse and (finished or interrupted) else None
    if saved is not None and same_budget(saved, config):
        summary = ({"final_loss": last_logged(out, "loss")} if finished
                   else pretrain(saved, resume=True, source=subset, show_progress=False))
        seconds_per_epoch = None
    else:
        if out.exists():  # a fresh run: nothing of an earlier attempt may mix into its logs
            shutil.rmtree(out)
        summary = pretrain(config, source=subset, show_progress=False)
        seconds_per_epoch = (time.perf_counter() - started) / epochs
    row = {"method": name, "backbone": backbone, "epochs": epochs, "seed": seed, "train_images": len(subset.train),
           "seconds_per_epoch": seconds_per_epoch, "final_loss": summary["final_loss"], "options": options,
           "reconstruction_loss": last_logged(out, "reconstruction_loss"),
           **evaluate_target(load_run_target(out), full)}
    if method_class.needs_labels:
        row["note"] = f"supervised: uses the labels of the {len(subset.train)}-image pre-training subset"
    return row


def same_budget(saved: RunConfig, config: RunConfig) -> bool:
    """The same run but for settings that change speed, not results (memory order)."""
    return replace(saved, train=replace(saved.train, channels_last=config.train.channels_last)) == config


def file_name(name: str) -> str:
    """A method name as a file name: compose:mae+simclr -> compose-mae-simclr."""
    return name.replace(":", "-").replace("+", "-")


def last_logged(run_dir: Path, key: str) -> float | None:
    """The last value of `key` in the run's metrics.jsonl (reconstructing methods log "reconstruction_loss")."""
    values = [record[key] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if key in (record := json.loads(line))]
    return values[-1] if values else None


def measure_random(full: ImageSource, backbones: tuple[str, ...]) -> list[dict]:
    rows = []
    for backbone_name in backbones:
        torch.manual_seed(0)
        backbone = create_backbone(backbone_name, full.image_size[0], full.channels)
        target = EvalTarget(backbone, f"timm:{backbone_name}", full.image_size[0])
        rows.append({"method": "random init", "backbone": backbone_name, "epochs": 0, "train_images": 0,
                     "seconds_per_epoch": 0.0, "final_loss": None, "options": {},
                     **evaluate_target(target, full)})
    return rows


def write_row(row: dict, key: str) -> None:
    path = RESULTS / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    row["measured"] = time.strftime("%Y-%m-%d %H:%M")
    temporary = path.with_suffix(".json.tmp")  # a killed write never leaves a torn row that --skip-done trusts
    temporary.write_text(json.dumps(row, indent=2))
    temporary.replace(path)
    print(json.dumps(row))


def notes(row: dict) -> str:
    """The row's non-default options (variants of one method differ there) and its note."""
    given = row.get("options") or {}
    # Training settings live in "options" as train.KEY; some older rows have them only in a "train" dict.
    settings = {**(row.get("train") or {}),
                **{key.removeprefix("train."): value for key, value in given.items() if key.startswith("train.")}}
    method = {key: value for key, value in given.items() if not key.startswith("train.")}
    options = ", ".join(f"{key}={value}" for key, value in sorted(method.items()))
    train = ", ".join(f"{key}={value}" for key, value in sorted(settings.items()))
    return "; ".join(part for part in (f"options: {options}" if options else "", f"train: {train}" if train else "",
                                       row.get("note", "")) if part)


def render() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    rows.sort(key=lambda r: (r["method"] != "random init", r["backbone"], -r["knn_top1"]))
    lines = [
        "| method | backbone | kNN top-1 | linear top-1 | reconstruction loss | s / epoch | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        seconds = f"{row['seconds_per_epoch']:.1f}" if row["epochs"] and row["seconds_per_epoch"] else "-"
        reconstruction = f"{row['reconstruction_loss']:.3f}" if row.get("reconstruction_loss") is not None else "-"
        lines.append(f"| {row['method']} | {row['backbone']} | {row['knn_top1']:.2f} | {row['linear_top1']:.2f} | "
                     f"{reconstruction} | "
                     f"{seconds} | {notes(row)} |")
    text = TABLE.read_text() if TABLE.exists() else "# Methods\n\n<!-- table -->\n<!-- /table -->\n"
    header = (f"Fashion-MNIST (`../shared/data/fashion_mnist.npz`), pre-training on a fixed stratified "
              f"{TRAIN_IMAGES}-image subset, {EPOCHS} epochs, batch {BATCH_SIZE}, 2 CPU cores; kNN (T=0.07) and "
              "linear probe on frozen features of all 60,000 training images, top-1 % on the 10,000 test images. "
              "Reconstruction loss: the last logged masked-patch loss of methods that reconstruct pixels (each "
              "method's own target and distance, so it compares runs of one method, not methods). "
              "Produced by `python bench/methods_table.py --render`.\n\n")
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(replace_block(text, "table", header + "\n".join(lines)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="", help="comma-separated method names")
    parser.add_argument("--random", action="store_true", help="measure the random-init rows")
    parser.add_argument("--render", action="store_true", help="write docs/methods.md from the stored rows")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--option", action="append", default=[], help="METHOD:key=value, e.g. simclr:temperature=0.2")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate a finished run folder of the same configuration, resume an interrupted one")
    parser.add_argument("--tag", default="", help="suffix of the row's file name (variants of one method)")
    parser.add_argument("--seed", type=int, default=0, help="pre-training seed (the subset stays seed 0's)")
    parser.add_argument("--backbone", help="replaces the table's backbone (e.g. a ViT row of a CNN method); with "
                        "--random, the one random-init row to measure")
    parser.add_argument("--skip-done", action="store_true", help="skip a row whose result file already exists")
    parser.add_argument("--train", action="append", default=[], help="training override, e.g. optimizer=adamw")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.methods or args.random:
        full, subset = load_data()
        if args.random:
            backbones = (args.backbone,) if args.backbone else (CNN_BACKBONE, VIT_BACKBONE)
            for row in measure_random(full, backbones):
                write_row(row, f"random-{row['backbone']}")
        for name in filter(None, args.methods.split(",")):
            options = {}
            for text in args.option:
                assignment, _, value = text.partition("=")
                method, _, key = assignment.rpartition(":")  # METHOD may hold ':' itself (compose:a+b)
                if method == name:
                    options[key] = yaml.safe_load(value)
            key = row_key(name, args.tag, args.epochs, args.seed)
            with row_lock(key) as ours:
                if not ours:
                    print(f"{key}: being measured by another process, skipped")
                    continue
                if args.skip_done and (RESULTS / f"{key}.json").exists():
                    print(f"{key}: done, skipped")
                    continue
                train = {f"train.{setting}": yaml.safe_load(value)
                         for setting, _, value in (text.partition("=") for text in args.train)}
                row = measure_method(name, full, subset, {**options, **train}, args.epochs, args.reuse, args.tag,
                                     args.seed, args.backbone)
                write_row(row, key)
    if args.render:
        render()
        render_budgets(RESULTS, TABLE, EPOCHS)


if __name__ == "__main__":
    main()
