"""DINO's multi-crop loss, pretrainlab vs lightly 1.6.0's DINOLoss: the same value, and the time of forward + backward.

    python -m bench.dino_loss_vs_lightly [--batch 256] [--out-dim 4096] [--local 8] [--repeats 15]

The methods table's DINO setting: 2 global + 8 local views of a batch of 256, 4096 prototypes, teacher
temperature 0.04, student temperature 0.1. Both losses get identical tensors and a zero centre; their values
must agree. Then each loss's forward + backward is timed in turns (ours, lightly's, ours, ...), one fresh
criterion per call so both start from a zero centre, and the medians and their ratio are printed (>1: ours is
faster). pretrainlab sums the other teachers' probabilities per student view (one log-softmax per view),
lightly loops over every (teacher, student) pair. Needs `pip install -e ".[bench]"`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from pretrainlab.losses import DINOLoss


def timed(step: Callable[[], torch.Tensor]) -> float:
    started = time.perf_counter()
    step().backward()
    return time.perf_counter() - started


def main() -> None:
    from lightly.loss import DINOLoss as LightlyDINOLoss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out-dim", type=int, default=4096)
    parser.add_argument("--local", type=int, default=8, help="local views beside the 2 global ones")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    if min(args.batch, args.out_dim, args.repeats) < 1 or args.local < 0:
        print(f"error: --batch, --out-dim and --repeats must be >= 1 and --local >= 0, got {args.batch}, "
              f"{args.out_dim}, {args.repeats} and {args.local}", file=sys.stderr)
        raise SystemExit(2)

    generator = torch.Generator().manual_seed(0)
    views = 2 + args.local
    student = [torch.randn(args.batch, args.out_dim, generator=generator, requires_grad=True) for _ in range(views)]
    teacher = [torch.randn(args.batch, args.out_dim, generator=generator) for _ in range(2)]

    def ours() -> torch.Tensor:
        return DINOLoss(args.out_dim, student_temperature=0.1)(student, teacher, teacher_temperature=0.04)

    def lightly() -> torch.Tensor:
        criterion = LightlyDINOLoss(args.out_dim, warmup_teacher_temp=0.04, teacher_temp=0.04, student_temp=0.1)
        return criterion(teacher, student, epoch=0)

    print(f"values: pretrainlab {ours().item():.6f}  lightly {lightly().item():.6f}")
    times: dict[str, list[float]] = {"pretrainlab": [], "lightly": []}
    for _ in range(args.repeats):
        times["pretrainlab"].append(timed(ours))
        times["lightly"].append(timed(lightly))
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["lightly"] / medians["pretrainlab"]
    print(f"forward + backward, median of {args.repeats} ({args.batch} images, {views} views, K={args.out_dim}, "
          f"{torch.get_num_threads()} threads): pretrainlab {medians['pretrainlab'] * 1e3:.1f} ms, lightly "
          f"{medians['lightly'] * 1e3:.1f} ms, lightly / pretrainlab {ratio:.2f}x")


if __name__ == "__main__":
    main()
