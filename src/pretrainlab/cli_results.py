"""The subcommands over evaluation results: gauntlet, compare, store rebuild, report.

Kept beside cli.py so the `pretrainlab` command stays one small parser per file; like cli.py they only
parse flags and call the library.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pretrainlab.store.database import DEFAULT_STORE

log = logging.getLogger("pretrainlab")


def whole_number_at_least(text: str, lowest: int) -> int:
    """int(text), or argparse.ArgumentTypeError when it is not a whole number >= lowest."""
    try:
        value = int(text)
    except ValueError:
        value = lowest - 1
    if value < lowest:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {lowest}, got '{text}'")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (a size or count of 0 used to be ignored silently)."""
    return whole_number_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0 (seeds: numpy's generators refuse a negative one with a traceback)."""
    return whole_number_at_least(text, 0)


def comma_list(values: list[str]) -> list[str]:
    return [item.strip() for text in values for item in text.split(",") if item.strip()]


def parse_options(texts: list[str]) -> dict[str, Any]:
    from pretrainlab.config import parse_override

    options = {}
    for text in texts:
        path, value = parse_override(text)
        options[".".join(path)] = value
    return options


def run_gauntlet(args: argparse.Namespace) -> int:
    from pretrainlab.eval.gauntlet import format_summary
    from pretrainlab.pipeline import gauntlet

    outcome = gauntlet(args.backbone, args.data, comma_list(args.protocols) or None, args.seeds, args.store,
                       args.weights, args.device, args.img_size, parse_options(args.option), args.download,
                       args.keep_going, args.max_train, args.max_test)
    print(format_summary(outcome))
    print(f"results stored in {args.store}")
    return 1 if outcome.failed else 0


def run_compare(args: argparse.Namespace) -> int:
    from pretrainlab.atomic import check_output_path
    from pretrainlab.report import DEFAULT_RANK_EXCLUDE, compare_store, render, write_comparison_report
    from pretrainlab.store import ResultsStore

    excluded = comma_list(args.rank_exclude) or list(DEFAULT_RANK_EXCLUDE)
    excluded = [] if excluded == ["none"] else excluded
    if args.html:
        check_output_path(args.html, "--html", want_folder=False)
    comparisons = compare_store(ResultsStore(args.store), args.runs, args.data, excluded)
    print(render(comparisons, args.format))
    if args.html:
        log.info("comparison page written to %s", write_comparison_report(comparisons, args.html))
    return 0


def run_store(args: argparse.Namespace) -> int:
    from pretrainlab.store import ResultsStore, rebuild_store

    summary = rebuild_store(ResultsStore(args.store), args.runs)
    print(f"{args.store}: {summary.runs} runs, {summary.checkpoints} checkpoint files, "
          f"{summary.evaluations} evaluations")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from pretrainlab.report import write_run_report

    if args.network:
        from pretrainlab.errors import PretrainlabError
        from pretrainlab.pipeline import resolve_device
        from pretrainlab.report.run_outputs import snapshot_run_network

        if not (args.run / "config.yaml").is_file():
            raise PretrainlabError(f"run folder not found (no config.yaml): {args.run}")
        snapshot_run_network(args.run, resolve_device(args.device))
    print(write_run_report(args.run, args.store))
    return 0


def add_store_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"results database (default {DEFAULT_STORE})")


def add_results_commands(commands: argparse._SubParsersAction) -> None:
    """Adds gauntlet, compare, store and report to the `pretrainlab` parser."""
    gauntlet = commands.add_parser("gauntlet", help="every evaluation protocol on one backbone, each seed, stored")
    gauntlet.add_argument("backbone", help="run folder, or timm:NAME (random fair init unless --weights)")
    gauntlet.add_argument("--data", default="builtin", help="dataset spec (pretrainlab list datasets)")
    gauntlet.add_argument("--protocols", action="append", default=[],
                          help="comma list (default: every registered protocol that applies to the data)")
    gauntlet.add_argument("--seeds", type=int, default=3, help="run each protocol with seeds 0..N-1 (default 3)")
    add_store_flag(gauntlet)
    gauntlet.add_argument("--weights", type=Path, help="weights for a timm:NAME backbone (safetensors or .pth)")
    gauntlet.add_argument("--img-size", type=positive_int)
    gauntlet.add_argument("--device", default="auto")
    gauntlet.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                          help="protocol option, e.g. k=20 or speed_batch_size=64 (repeatable)")
    gauntlet.add_argument("--download", action="store_true")
    gauntlet.add_argument("--keep-going", action="store_true", help="a crashing protocol is reported, not fatal")
    gauntlet.add_argument("--max-train", type=int, help="evaluate on a fixed class-balanced subset of the training "
                          "split (CPU budgets); the size becomes part of the results' data spec")
    gauntlet.add_argument("--max-test", type=int, help="the same for the test split")
    gauntlet.set_defaults(handler=run_gauntlet)

    compare = commands.add_parser("compare", help="backbones x protocols from the store: mean ± std, z-score rank")
    compare.add_argument("runs", nargs="*", help="run folders or labels such as timm:resnet18 (default: all)")
    compare.add_argument("--data", help="only this dataset spec (default: one table per dataset)")
    add_store_flag(compare)
    compare.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    compare.add_argument("--html", type=Path, help="also write a self-contained HTML page here")
    compare.add_argument("--rank-exclude", action="append", default=[],
                         help="protocols left out of the rank (comma list; default: speed; 'none' ranks all)")
    compare.set_defaults(handler=run_compare)

    store = commands.add_parser("store", help="maintain the results store")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    rebuild = store_commands.add_parser("rebuild", help="re-index run folders (the source of truth) into the store")
    rebuild.add_argument("--runs", type=Path, help="folder holding run folders (default: the store's folder)")
    add_store_flag(rebuild)
    rebuild.set_defaults(handler=run_store)

    report = commands.add_parser("report", help="write or refresh RUN/report.html")
    report.add_argument("run", type=Path, help="run folder")
    report.add_argument("--network", action="store_true", help="(re)compute the network view's feature maps from "
                        "backbone.safetensors and the run's data (pre-training writes them at the end)")
    report.add_argument("--device", default="auto")
    add_store_flag(report)
    report.set_defaults(handler=run_report)
