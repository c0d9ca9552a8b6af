"""PELA low-rank compression (arXiv 2310.10700) of the architecture table's SimCLR runs: parameters, GMACs and
accuracy before, after the SVD alone, and after PELA's intermediate pre-training.

    python bench/compression_study.py --rows vit,resnet18-narrow [--ratios 0.5,0.25]
    python bench/compression_study.py --rows resnet18-narrow --source-epochs 1 --ratios 0.25,0.5,0.75 --epochs 1

Each run of bench/architectures_table.py (runs/bench-architectures/KEY, or KEY-Nep for the run of
`--source-epochs N`) is factorised at each rank ratio; "SVD only"
evaluates the factorised model straight from the truncated SVD, "PELA" after `pretrainlab compress` (--epochs,
default 3, of 64 on the run's own 5,000 training images: feature distillation + weight-perturbation penalty, the
pela recipe's AdamW). Evaluation as in the architecture table (kNN and linear probe, 5,000 training / 5,000 test
images).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.architectures_table import EPOCHS as ARCH_EPOCHS
from bench.architectures_table import RESULTS as ARCH_RESULTS
from bench.architectures_table import probe, run_dir, sources, trained_kind
from pretrainlab.backbones import Backbone, load_backbone
from pretrainlab.backbones.lowrank import init_from_full, low_rank_backbone
from pretrainlab.compression import compress_run
from pretrainlab.data.source import ImageSource
from pretrainlab.eval import EvalTarget
from pretrainlab.eval.target import load_run_target

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "compression"
RUNS = ROOT / "runs" / "bench-compression"


def size(backbone: Backbone, img_size: int, in_chans: int) -> dict[str, float]:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        backbone.eval().pooled(torch.zeros(1, in_chans, img_size, img_size))
    return {"parameters_m": sum(p.numel() for p in backbone.parameters()) / 1e6,
            "gmacs": counter.get_total_flops() / 2e9}


def measure(key: str, ratio: float, evaluation: ImageSource, reuse: bool, epochs: int = 3,
            source_epochs: int = ARCH_EPOCHS, perturbation_weight: float | None = None) -> None:
    """One row: `perturbation_weight` None keeps the pela recipe's (1); another value is an ablation, named in the
    run folder and the result file."""
    run = run_dir(key, source_epochs)  # the architecture table's SimCLR run at that budget
    teacher = load_run_target(run)
    table_row = ARCH_RESULTS / f"{key}.json"  # the original's probe is the architecture table's (same evaluation)
    known = (json.loads(table_row.read_text()).get(trained_kind(source_epochs), {}) if table_row.exists() else {})
    accuracy = ({name: known[name] for name in ("knn_top1", "knn_k", "linear_top1")} if "linear_top1" in known
                else probe(teacher, evaluation))
    rows = {"original": {**size(teacher.backbone, 32, 1), **accuracy}}
    svd = low_rank_backbone(load_backbone(run / "backbone.safetensors"), ratio)
    init_from_full(svd.model, teacher.backbone.model)
    svd_target = EvalTarget(svd, f"{key}@svd{ratio:g}", teacher.img_size, teacher.mean, teacher.std)
    rows["svd"] = {**size(svd, 32, 1), **probe(svd_target, evaluation)}
    ablation = "" if perturbation_weight is None else f"-pw{perturbation_weight:g}"
    out = RUNS / f"{run.name}-pela{ratio:g}{ablation}"
    options = {} if perturbation_weight is None else {"perturbation_weight": perturbation_weight}
    started = time.perf_counter()
    if not (reuse and (out / "backbone.safetensors").exists()):
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        compress_run(run, ratio, out, {"epochs": epochs, "batch_size": 64, "warmup_epochs": min(1.0, epochs / 3)},
                     options, show_progress=False)
    compressed = load_run_target(out)
    rows["pela"] = {**size(compressed.backbone, 32, 1), **probe(compressed, evaluation),
                    "train_seconds": time.perf_counter() - started, "epochs": epochs}
    record = {"row": key, "source_epochs": source_epochs, "rank_ratio": ratio, "pela_options": options, **rows,
              "measured": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{run.name}-{ratio:g}{ablation}.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="vit,resnet18-narrow")
    parser.add_argument("--ratios", default="0.5")
    parser.add_argument("--epochs", type=int, default=3, help="PELA's intermediate pre-training epochs")
    parser.add_argument("--source-epochs", type=int, default=ARCH_EPOCHS,
                        help="the SimCLR budget of the architecture-table run to compress (1: the CNN rows' runs)")
    parser.add_argument("--perturbation-weight", type=float, default=None,
                        help="ablation: PELA's weight-perturbation penalty weight (default: the recipe's, 1)")
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    _, evaluation = sources()  # loaded once for every row and ratio
    for key in args.rows.split(","):
        for ratio in args.ratios.split(","):
            measure(key, float(ratio), evaluation, args.reuse, args.epochs, args.source_epochs,
                    args.perturbation_weight)


if __name__ == "__main__":
    main()
