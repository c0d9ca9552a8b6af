"""Re-measures the seconds-per-epoch column of the methods table on a quiet machine.

    python -m bench.methods_speed [--steps 6] [--only simclr,mae]

The accuracy rows of bench/methods_table.py were measured while other jobs shared the two cores, which
inflates their wall time. This script rebuilds each row's method with the same backbone and options,
times `--steps` training steps (batch 256, after 2 warm-up steps) one method at a time, and writes
median step time x steps per epoch back into the row as `seconds_per_epoch` (the old value is kept as
`seconds_per_epoch_loaded`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.methods_table import BATCH_SIZE, RESULTS, load_data
from pretrainlab.data.source import ImageSource
from pretrainlab.errors import PretrainlabError
from pretrainlab.pipeline import build_method, build_run_config, method_context
from pretrainlab.train.loop import Trainer


def median_step_seconds(row: dict, full: ImageSource, subset: ImageSource, steps: int) -> float:
    # The method as the row trained it: recipe < the row's options, built by the pipeline (recipe method
    # options such as DINO's 4096 prototypes and 8 local views included; the dataclass defaults are not a
    # recipe: DINO's 65,536 prototypes made its step several times slower than the row's).
    img_size = subset.image_size[0]
    context = method_context(subset, img_size)
    options = row.get("options") or {}  # "train.KEY" entries override the recipe's training settings
    train = {key.removeprefix("train."): value for key, value in options.items() if key.startswith("train.")}
    config = build_run_config(row["method"], {"backbone": row["backbone"], "data": full.spec},
                              {**train, "epochs": 1, "batch_size": BATCH_SIZE, "warmup_epochs": 0.0},
                              {key: value for key, value in options.items() if not key.startswith("train.")})
    method, _ = build_method(config, context, subset)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(method, subset.train, config.train, Path(run_dir),
                          torch.device("cpu"), show_progress=False)
        times = []
        for step in range(steps + 2):
            images, labels = (torch.from_numpy(a[trainer.plan.indices(step)]) if a is not None else None
                              for a in (subset.train.images, subset.train.labels))
            started = time.perf_counter()
            trainer.train_step(step, images, labels)
            if step >= 2:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--only", default="", help="comma-separated method names (default: every row)")
    args = parser.parse_args()
    full, subset = load_data()
    steps_per_epoch = len(subset.train) // BATCH_SIZE
    only = set(filter(None, args.only.split(",")))
    for path in sorted(RESULTS.glob("*.json")):
        row = json.loads(path.read_text())
        if not row["epochs"] or (only and row["method"] not in only):
            continue
        try:
            seconds = median_step_seconds(row, full, subset, args.steps) * steps_per_epoch
        except PretrainlabError as error:  # e.g. a teacher run folder that this checkout no longer has
            print(f"{path.name}: not re-timed, its method cannot be built here ({error})")
            continue
        row.setdefault("seconds_per_epoch_loaded", row["seconds_per_epoch"])
        row["seconds_per_epoch"] = seconds
        row["speed_measured"] = (f"{time.strftime('%Y-%m-%d %H:%M')}, quiet machine, median of {args.steps} steps "
                                 f"x {steps_per_epoch} steps per epoch, {torch.get_num_threads()} threads")
        path.write_text(json.dumps(row, indent=2))
        print(f"{row['method']:32s} {row['backbone']:16s} {seconds:7.1f} s / epoch")


if __name__ == "__main__":
    main()
