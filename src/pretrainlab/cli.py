"""The `pretrainlab` command: parses flags, validates them, calls the library. No logic of its own."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pretrainlab.allocator import keep_freed_memory
from pretrainlab.cli_attack import add_attack_commands
from pretrainlab.cli_compress import add_compress_commands
from pretrainlab.cli_explain import add_explain_commands
from pretrainlab.cli_results import add_results_commands, add_store_flag, non_negative_int, positive_int
from pretrainlab.cli_scale import add_scale_commands
from pretrainlab.cli_text import add_text_commands
from pretrainlab.cli_tokens import add_tokens_commands
from pretrainlab.errors import PretrainlabError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one `error: ...` line (exit code 2), like every other bad input; --help for usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SystemExit(print_error(f"{message} (see {self.prog} --help)"))


def print_error(message: str) -> int:
    """Prints `error: MESSAGE` on one line (a multi-line message is joined) and returns exit code 2."""
    print(f"error: {' '.join(part.strip() for part in str(message).splitlines())}", file=sys.stderr)
    return EXIT_USAGE


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, help="pretext task (pretrainlab list methods)")
    parser.add_argument("--backbone", help="timm model name (pretrainlab list backbones)")
    parser.add_argument("--data", help="builtin | npz:PATH | folder:PATH | torchvision:NAME[:ROOT] | shards:DIR")
    parser.add_argument("--out", help="run folder (default runs/METHOD)")
    parser.add_argument("--img-size", type=positive_int, help="training image size (default: the data's)")
    parser.add_argument("--decode-size", type=positive_int, help="folder:/shards: rows of the decoded images (default: "
                        "--img-size); larger leaves random-resized crops more pixels (recorded in config.yaml)")
    parser.add_argument("--decode-aspect", type=float, help="folder:/shards: width / height of the decode box (default "
                        "1, a centre square; e.g. 1.33 keeps whole 4:3 landscape photos)")
    parser.add_argument("--max-train", type=int, help="pre-train on a fixed class-balanced subset of this many "
                        "training images (quick runs on large sets; recorded in config.yaml)")
    parser.add_argument("--recipe", type=Path, help="YAML recipe (default: the packaged recipe of the method)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, e.g. temperature=0.2 or views.crop_min_scale=0.2 (repeatable)")
    parser.add_argument("--backbone-option", action="append", default=[], metavar="KEY=VALUE",
                        help="timm keyword argument of the backbone, e.g. drop_path_rate=0.1 or soft_mask_end=0.2 "
                        "(repeatable; saved with the exported backbone)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--download", action="store_true", help="let torchvision datasets download")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    train = parser.add_argument_group("training")
    for flag, kind in [("epochs", int), ("batch-size", int), ("optimizer", str), ("lr", float), ("min-lr", float),
                       ("weight-decay", float), ("momentum", float), ("lars-trust", float), ("warmup-epochs", float),
                       ("precision", str), ("grad-clip", float), ("accumulate", int), ("checkpoint-every", int),
                       ("knn-every", int), ("log-every", int), ("seed", int), ("device", str), ("stop-after", int),
                       ("lr-scaling", str), ("workers", int), ("shuffle-buffer", int), ("strategy", str),
                       ("dist-timeout", float), ("filters-every", int)]:
        train.add_argument(f"--{flag}", type=kind)
    # --no-FLAG turns a recipe's True off
    for flag in ("channels-last", "compile", "sync-batchnorm", "gpu-decode", "tensorboard"):
        train.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)


TRAIN_FLAGS = ("epochs", "batch_size", "optimizer", "lr", "min_lr", "weight_decay", "momentum", "lars_trust",
               "warmup_epochs", "precision", "grad_clip", "accumulate", "checkpoint_every", "knn_every", "log_every",
               "seed", "device", "stop_after", "lr_scaling", "channels_last", "compile", "sync_batchnorm", "workers",
               "shuffle_buffer", "gpu_decode", "strategy", "dist_timeout", "filters_every", "tensorboard")


def run_pretrain(args: argparse.Namespace) -> int:
    from pretrainlab.config import parse_override
    from pretrainlab.pipeline import build_run_config, pretrain, resume_config

    options = {}
    for text in args.option:
        path, value = parse_override(text)
        options[".".join(path)] = value
    backbone_options = {".".join(path): value for path, value in map(parse_override, args.backbone_option)}
    overrides = {"backbone": args.backbone, "data": args.data, "img_size": args.img_size,
                 "out": args.out or f"runs/{args.method}", "download": args.download or None,
                 "max_train": args.max_train, "decode_size": args.decode_size, "decode_aspect": args.decode_aspect,
                 "backbone_options": backbone_options or None}
    train = {name: getattr(args, name) for name in TRAIN_FLAGS}
    if args.resume:
        config = resume_config(Path(overrides["out"]), overrides, train, options)
    else:
        config = build_run_config(args.method, overrides, train, options, args.recipe)
    if config.method != args.method:
        raise PretrainlabError(f"--resume: {config.out} is a '{config.method}' run, not '{args.method}'")
    summary = pretrain(config, resume=args.resume, show_progress=not args.no_progress)
    logging.getLogger("pretrainlab").info(
        "done: %d steps in %.1f s (%.0f images/s); backbone in %s/backbone.safetensors",
        summary["steps"], summary["seconds"], summary["images_per_second"], summary["run_dir"])
    if summary.get("report"):
        print(f"report: {summary['report']}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from pretrainlab.config import parse_override
    from pretrainlab.pipeline import evaluate_backbone

    protocols = [p for text in args.protocol for p in text.split(",") if p] or ["knn"]
    options: dict[str, Any] = {".".join(path): value for path, value in map(parse_override, args.option)}
    options.update({key: value for key, value in (("k", args.k), ("seed", args.seed)) if value is not None})
    results = evaluate_backbone(args.backbone, args.data, protocols, args.device, args.weights, args.img_size,
                                options, download=args.download,
                                store=None if args.no_store else args.store)
    for result in results:
        if args.json:
            print(json.dumps(result.to_dict()))
        else:
            print(f"{result.backbone}  {result.protocol:8s} {result.metric} {result.value:6.2f} %  "
                  f"({result.seconds:.1f} s, {json.dumps(result.settings)})")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pretrainlab.atomic import check_output_path
    from pretrainlab.eval.export import export_spec

    check_output_path(args.out, "--out", want_folder=False)
    spec = f"{args.run}@{args.layer}" if args.layer else args.run
    summary = export_spec(spec, args.out)
    print(f"wrote {summary['out']}: {summary['selector']} of {args.run} ({summary['embed_dim']} features)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from pretrainlab.methods import METHODS

        lines = METHODS.names()
    elif args.what == "backbones":
        from pretrainlab.backbones import backbone_names
        from pretrainlab.backbones.small import SMALL_BACKBONES

        pattern = args.filter or ""
        lines = [f"{name}  (small-image)" for name in SMALL_BACKBONES if pattern in name]
        lines += [name for name in backbone_names() if pattern in name and name not in SMALL_BACKBONES]
    elif args.what == "datasets":
        from pretrainlab.data import describe_data_kinds

        lines = describe_data_kinds()
    else:
        from pretrainlab.eval import PROTOCOLS

        lines = PROTOCOLS.names()
    print("\n".join(lines))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from pretrainlab.demo import format_table
    from pretrainlab.demo import run_demo as demo

    rows = demo(out=args.out, epochs=args.epochs, show_progress=not args.no_progress, store=args.store)
    print(format_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pretrainlab", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="pre-train, evaluate and report on the embedded dataset (minutes)")
    demo.add_argument("--out", help="run folder (default runs/demo-TIMESTAMP)")
    demo.add_argument("--epochs", type=int, help="pre-training epochs (default: the demo's budget)")
    demo.add_argument("--no-progress", action="store_true")
    add_store_flag(demo)
    demo.set_defaults(handler=run_demo)

    pretrain = commands.add_parser("pretrain", help="pre-train a backbone with a pretext task")
    add_pretrain_arguments(pretrain)
    pretrain.set_defaults(handler=run_pretrain)

    evaluate = commands.add_parser("eval", help="evaluate a run folder or timm:NAME on a labelled dataset")
    evaluate.add_argument("backbone", help="run folder, or timm:NAME (random init unless --weights); add @head.N, "
                          "@dimD or @layerL,dimD to measure one representation; or a pretrainlab export file")
    evaluate.add_argument("--data", default="builtin")
    evaluate.add_argument("--protocol", action="append", default=[], help="knn, linear (repeatable or comma list)")
    evaluate.add_argument("--weights", type=Path, help="weights for a timm:NAME backbone (safetensors or .pth)")
    evaluate.add_argument("--img-size", type=positive_int)
    evaluate.add_argument("--k", type=positive_int,
                          help="kNN neighbours (default 200, or 20 with < 1,000 images a class)")
    evaluate.add_argument("--seed", type=non_negative_int)
    evaluate.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                          help="protocol option, e.g. epochs=3, fractions=[0.01,0.1] or noise=[sym40] (repeatable)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--download", action="store_true")
    evaluate.add_argument("--json", action="store_true", help="one JSON object per protocol on stdout")
    add_store_flag(evaluate)
    evaluate.add_argument("--no-store", action="store_true", help="print only; record nothing")
    evaluate.set_defaults(handler=run_eval)

    export = commands.add_parser("export", help="write one representation of a run (backbone, head.N, dimD) as "
                                 "a safetensors file that pretrainlab eval FILE evaluates")
    export.add_argument("run", help="run folder, optionally RUN@head.N, RUN@dimD or RUN@layerL,dimD")
    export.add_argument("--layer", help="the representation: backbone, head.N, dimD or layerL,dimD (or use RUN@...)")
    export.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    export.set_defaults(handler=run_export)

    add_results_commands(commands)  # gauntlet, compare, store rebuild, report
    add_scale_commands(commands)  # shard
    add_explain_commands(commands)  # explain
    add_compress_commands(commands)  # compress (PELA low-rank compression)
    add_attack_commands(commands)  # attack
    add_text_commands(commands)  # curate, describe-neurons
    add_tokens_commands(commands)  # tokenize (storage-efficient token datasets)

    listing = commands.add_parser("list", help="list methods, backbones, datasets or protocols")
    listing.add_argument("what", choices=["methods", "backbones", "datasets", "protocols"])
    listing.add_argument("--filter", help="only names containing this text")
    listing.set_defaults(handler=run_list)
    return parser


def configure_logging(verbose: bool) -> None:
    import os

    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level if os.environ.get("RANK", "0") == "0" else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    """Runs one command; bad input is exit code 2 with one `error:` line, Ctrl-C exit code 130 with one line,
    wherever it lands (imports, data loading, model building: Ctrl-C during training saves a checkpoint)."""
    try:
        args = build_parser().parse_args(argv)
        configure_logging(args.verbose)
        keep_freed_memory()  # every command runs CPU tensor code (training, feature extraction, probes)
        from pretrainlab.train.loop import TrainingInterrupted

        try:
            return args.handler(args)
        except TrainingInterrupted as interrupted:
            print(f"interrupted: {interrupted}", file=sys.stderr)
            return EXIT_INTERRUPTED
    except PretrainlabError as error:
        return print_error(str(error))
    except SystemExit as exit_request:  # argparse: --help (0) or a usage error (2, already printed)
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if "torch.distributed" in sys.modules:  # only a command that imported torch can hold a process group
            from pretrainlab.distributed import leave_process_group

            leave_process_group()
