"""The `pretrainlab attack` subcommand: parses flags and calls pretrainlab.attack.pipeline. No logic of its own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pretrainlab.cli_results import add_store_flag, comma_list, non_negative_int, parse_options, positive_int

DEFAULT_EPS = "1/255,2/255,4/255,8/255"


def run_attack(args: argparse.Namespace) -> int:
    from pretrainlab.attack.pipeline import make_plan, run_plan
    from pretrainlab.report.run_page import refresh_run_report

    plan = make_plan(comma_list(args.attack) or ["pgd"], comma_list([args.eps]), args.norm,
                     comma_list(args.defence) or ["none"], args.head, args.seed, args.max_train, args.max_test,
                     parse_options(args.option),
                     show_progress=not args.no_progress)
    report = run_plan(args.backbone, args.data, plan, args.weights, args.device, args.img_size,
                      None if args.no_store else args.store, args.figures, args.download)
    for result in report.results:
        if args.json:
            print(json.dumps(result.to_dict()))
        else:
            print(f"{result.backbone}  {result.protocol:22s} {result.metric:28s} {result.value:7.2f}  "
                  f"({result.seconds:.1f} s)")
    print(f"figures in {report.figures_dir}" + "".join(f"; exported run {path}" for path in report.exported_runs))
    page = refresh_run_report(args.backbone, None if args.no_store else args.store)
    if page is not None:
        print(f"report: {page}")
    return 0


def add_attack_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `attack` to the `pretrainlab` parser."""
    attack = commands.add_parser("attack", help="robust accuracy under attacks, universal and feature-space attacks, "
                                 "fooling images, defences; results stored, figures in RUN/attack/")
    attack.add_argument("backbone", help="run folder, or timm:NAME (random fair init unless --weights)")
    attack.add_argument("--weights", type=Path, help="weights for a timm:NAME backbone (safetensors or .pth)")
    attack.add_argument("--data", default="builtin", help="labelled dataset spec (pretrainlab list datasets)")
    attack.add_argument("--attack", action="append", default=[],
                        help="comma list (default pgd): fgsm, pgd, apgd, apgd_dlr, cw, square, autoattack, eot_pgd, "
                        "autoattack_rand (on a classifier); universal, feature, fooling (on the encoder)")
    attack.add_argument("--eps", default=DEFAULT_EPS, help=f"comma list of budgets in [0, 1] (default {DEFAULT_EPS})")
    attack.add_argument("--norm", default="linf", help="linf or l2")
    attack.add_argument("--defence", action="append", default=[],
                        help="comma list: none, adv_finetune, raw_isp, fusion:RUN2 (RUN2: a run folder or timm:NAME)")
    attack.add_argument("--head", default="linear", help="linear (probe on frozen features), finetune, or own (the "
                        "head an adv_finetune run saved)")
    attack.add_argument("--seed", type=non_negative_int, default=0)
    attack.add_argument("--max-train", type=positive_int,
                        help="fit heads on a class-balanced subset of the training split")
    attack.add_argument("--max-test", type=positive_int, default=500,
                        help="attack a class-balanced subset of this many test images (default 500)")
    attack.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="steps=20, square_queries=5000, adv_method=trades, adv_eps=8/255, adv_out=DIR, epochs=3 "
                        "(repeatable)")
    attack.add_argument("--figures", type=Path, help="folder for the PNG grids (default RUN/attack/)")
    attack.add_argument("--img-size", type=positive_int)
    attack.add_argument("--device", default="auto")
    attack.add_argument("--download", action="store_true")
    attack.add_argument("--json", action="store_true", help="one JSON object per result on stdout")
    attack.add_argument("--no-progress", action="store_true")
    add_store_flag(attack)
    attack.add_argument("--no-store", action="store_true", help="print only; record nothing")
    attack.set_defaults(handler=run_attack)
