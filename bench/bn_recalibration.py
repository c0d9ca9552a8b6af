"""Is a trained CNN's low probe accuracy its weights, or stale BatchNorm statistics?

    python bench/bn_recalibration.py resnet18-narrow-spark runs/bench-compression/resnet18-narrow-1ep-pela0.25

For each architecture-table row key (its 1-epoch run) or run folder: the kNN and linear probe of the exported
backbone as it is, then again after every BatchNorm's running statistics are recomputed (a cumulative average)
on 2,000 dense, un-augmented training images. Methods that train on masked inputs (SparK's sparse BatchNorm) or
that move a factorised model's weights (PELA) could leave running statistics that do not fit whole images; if
recomputing them recovers the accuracy, the loss was the statistics, not the features. Evaluation as in
bench/architectures_table.py (5,000 training / 5,000 test images of Fashion-MNIST at 32 px).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.architectures_table import probe, run_dir, sources
from pretrainlab.eval.features import input_batches, normalisation
from pretrainlab.eval.target import EvalTarget, load_run_target

RECALIBRATION_IMAGES = 2_000


def recalibrate(target: EvalTarget, images: np.ndarray) -> int:
    """Recomputes every BatchNorm's running mean and variance on `images` (N, H, W, C) uint8; returns how many."""
    norms = [m for m in target.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the whole pass, not an exponential one
    mean, std = normalisation(target, images)
    target.backbone.train()
    with torch.no_grad():
        for x in input_batches(target, images[:RECALIBRATION_IMAGES], mean, std, torch.device("cpu"),
                               target.img_size, 100):  # (100, C, H, W)
            target.backbone.pooled(x)
    target.backbone.eval()
    return len(norms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="row keys of the 1-epoch table runs, or run folders")
    args = parser.parse_args()
    _, evaluation = sources()
    for name in args.runs:
        target = load_run_target(Path(name) if "/" in name else run_dir(name, 1))
        print(name, "as exported", probe(target, evaluation), flush=True)
        count = recalibrate(target, evaluation.train.images)
        print(name, f"BatchNorm recomputed ({count} layers)", probe(target, evaluation), flush=True)


if __name__ == "__main__":
    main()
