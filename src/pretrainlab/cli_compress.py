"""`pretrainlab compress RUN --rank-ratio R`: low-rank compression of a finished run (PELA, arXiv 2310.10700).

Parses flags and calls `pretrainlab.compression.compress_run`; no logic of its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pretrainlab.cli_results import parse_options

TRAIN_FLAGS = (("epochs", int), ("batch-size", int), ("optimizer", str), ("lr", float), ("weight-decay", float),
               ("warmup-epochs", float), ("precision", str), ("seed", int), ("device", str), ("log-every", int))


def run_compress(args: argparse.Namespace) -> int:
    from pretrainlab.compression import compress_run

    train = {flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag, _ in TRAIN_FLAGS}
    summary = compress_run(Path(args.run), args.rank_ratio, args.out, train, parse_options(args.option),
                           show_progress=not args.no_progress)
    before, after = summary["parameters_before"], summary["parameters_after"]
    print(f"wrote {summary['run_dir']}: {summary['factorised_layers']} layers factorised, parameters "
          f"{before / 1e6:.3f}M -> {after / 1e6:.3f}M ({100 * after / before:.1f} %), {summary['steps']} steps "
          f"in {summary['seconds']:.0f} s; evaluate with pretrainlab eval {summary['run_dir']} --protocol knn,linear")
    return 0


def add_compress_commands(commands: argparse._SubParsersAction) -> None:
    compress = commands.add_parser("compress", help="low-rank compression of a run's backbone (PELA): factorise, "
                                   "then distil from the original; writes a new run folder")
    compress.add_argument("run", help="the finished run folder to compress")
    compress.add_argument("--rank-ratio", type=float, default=0.5,
                          help="share of each factorised layer's parameters kept, in (0, 1] (default 0.5)")
    compress.add_argument("--out", type=Path, help="the new run folder (default RUN-pelaR)")
    compress.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                          help="pela option: feature_weight, pooled_weight, perturbation_weight, perturbation_eps")
    compress.add_argument("--no-progress", action="store_true")
    group = compress.add_argument_group("training (default: the pela recipe)")
    for flag, kind in TRAIN_FLAGS:
        group.add_argument(f"--{flag}", type=kind)
    compress.set_defaults(handler=run_compress)
