"""`pretrainlab explain`: parses flags and calls explain/session.py; no logic of its own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pretrainlab.cli_results import add_store_flag, comma_list, non_negative_int, parse_options, positive_int

# Spelled out so building the parser imports no model code; a test keeps it equal to explain.ANALYSES.names().
ANALYSIS_NAMES = ("attention", "attribution", "cam", "cka", "comet", "dissect", "filters", "linear", "visualize")


def run_explain(args: argparse.Namespace) -> int:
    from pretrainlab.explain import ExplainSettings
    from pretrainlab.explain.session import explain_backbone
    from pretrainlab.report.run_page import refresh_run_report

    settings = ExplainSettings(images=args.images, layer=args.layer, img_size=args.img_size, seed=args.seed,
                               batch_size=args.batch_size, probe_images=args.probe_images,
                               options=parse_options(args.option), show_progress=not args.no_progress)
    outcome = explain_backbone(args.backbone, args.data, comma_list(args.what), settings, args.weights, args.device,
                               args.against, args.against_weights, None if args.no_store else args.store, args.out,
                               args.download)
    for result in outcome.results:
        if args.json:
            print(json.dumps(result.to_dict()))
        else:
            print(f"{result.protocol:22s} {result.metric:34s} {result.value:9.4f}")
    print(f"arrays and figures in {outcome.out_dir}")
    page = refresh_run_report(args.backbone, None if args.no_store else args.store)
    if page is not None:
        print(f"report: {page}")
    return 0


def add_explain_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `explain` to the `pretrainlab` parser."""
    explain = commands.add_parser("explain", help="attribution maps and their quality, attention patterns, filter "
                                  "health, CKA, feature visualisation, dissection, COMET, linear interpreters")
    explain.add_argument("backbone", help="run folder, or timm:NAME (random fair init unless --weights)")
    explain.add_argument("--weights", type=Path, help="weights for a timm:NAME backbone (safetensors or .pth)")
    explain.add_argument("--data", default="builtin", help="dataset spec (pretrainlab list datasets); composed:SPEC "
                         "canvases add pointing game, box IoU and dissection IoU")
    explain.add_argument("--what", action="append", default=[], required=True,
                         help=f"analyses, comma list: {', '.join(ANALYSIS_NAMES)}")
    explain.add_argument("--images", type=positive_int, default=16, help="test images explained (default 16)")
    explain.add_argument("--against", help="a second backbone for cka (run folder or timm:NAME)")
    explain.add_argument("--against-weights", type=Path, help="weights for a timm:NAME --against backbone")
    explain.add_argument("--layer", help="layer CAMs, dissection and visualisation look at "
                         "(a model.named_modules name)")
    explain.add_argument("--img-size", type=positive_int,
                         help="input size (default: the data's for CNNs, the model's for ViTs)")
    explain.add_argument("--seed", type=non_negative_int, default=0)
    explain.add_argument("--batch-size", type=positive_int, default=32)
    explain.add_argument("--probe-images", type=positive_int, default=1000,
                         help="training images the linear probe that gives a backbone its classifier is fitted on")
    explain.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="analysis option, e.g. cam_methods=[gradcam,eigencam] or rise_masks=256 (repeatable)")
    explain.add_argument("--out", type=Path, help="folder for arrays and figures (default RUN/explain)")
    explain.add_argument("--device", default="auto")
    explain.add_argument("--download", action="store_true")
    explain.add_argument("--json", action="store_true", help="one JSON object per summary on stdout")
    add_store_flag(explain)
    explain.add_argument("--no-store", action="store_true", help="write files only; record nothing")
    explain.add_argument("--no-progress", action="store_true")
    explain.set_defaults(handler=run_explain)
