"""`pretrainlab curate | describe-neurons`: the image-text commands (parsing only; logic in the library).

Zero-shot classification, image-text retrieval, the LiMBeR caption probe and neuron-description agreement
are evaluation protocols: `pretrainlab eval RUN --protocol zero_shot,image_text_retrieval,limber`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_curate(args: argparse.Namespace) -> int:
    from pretrainlab.curate import CurationConfig, curate_folder

    config = CurationConfig(data=args.data, out=str(args.out), exclude=tuple(args.exclude), against=tuple(args.against),
                            exclude_threshold=args.exclude_threshold, model=args.model,
                            duplicate_threshold=args.duplicate_threshold,
                            metadata=str(args.metadata) if args.metadata else None,
                            allowed_licences=tuple(args.allow_licence), copy=not args.no_copy)
    summary = curate_folder(config)
    reasons = ", ".join(f"{count} {reason}" for reason, count in summary["dropped_by_reason"].items()) or "none"
    print(f"kept {summary['kept']} of {summary['images']} images; dropped: {reasons}; manifest in "
          f"{Path(summary['settings']['out']) / 'manifest.jsonl'}")
    return 0


def add_curate_command(commands: argparse._SubParsersAction) -> None:
    curate = commands.add_parser("curate", help="PASS-style curation of an image folder: zero-shot text exclusion, "
                                 "near-duplicates, licence metadata; writes a manifest, never touches the input")
    curate.add_argument("data", help="folder:PATH, the images to curate (only read)")
    curate.add_argument("--out", type=Path, required=True, help="output folder (outside the input folder)")
    curate.add_argument("--exclude", action="append", default=[], metavar="TEXT",
                        help='drop images matching this text query, e.g. "a photo of a person" (repeatable; '
                        "needs --model, an image-text run)")
    curate.add_argument("--against", action="append", default=[], metavar="TEXT",
                        help="prompts of what allowed images show: exclusion becomes a zero-shot choice between "
                        "the queries and these (repeatable)")
    curate.add_argument("--exclude-threshold", type=float, default=0.3,
                        help="without --against: cosine similarity to a query at which an image is dropped (0.3)")
    curate.add_argument("--model", help="a pretrainlab run folder: a CLIP run (pretrain --method clip) for "
                        "--exclude; its backbone features also judge near-duplicates")
    curate.add_argument("--duplicate-threshold", type=float, default=0.95,
                        help="cosine similarity at which an image is a near-duplicate of an earlier one (1: off)")
    curate.add_argument("--metadata", type=Path, help="CSV/JSONL of file (relative to the folder) + licence")
    curate.add_argument("--allow-licence", action="append", default=[], metavar="LICENCE",
                        help="keep only these licences (repeatable; default: any non-empty licence)")
    curate.add_argument("--no-copy", action="store_true", help="write the manifest only, no copies of kept images")
    curate.set_defaults(handler=run_curate)


def run_describe_neurons(args: argparse.Namespace) -> int:
    from pretrainlab.data import load_source
    from pretrainlab.errors import PretrainlabError
    from pretrainlab.eval.protocols.neuron_descriptions import describe_target, needs_object_masks
    from pretrainlab.pipeline import resolve_device, seeded_target

    source = load_source(args.data)
    if (reason := needs_object_masks(source)) is not None:
        raise PretrainlabError(f"describe-neurons {reason}")
    target = seeded_target(args.backbone, args.img_size or source.image_size[0], source.channels)
    if args.img_size:
        target.img_size = args.img_size
    descriptions, mean, chance = describe_target(target, source, resolve_device(args.device), args.layer,
                                                 args.quantile, args.max_images)
    ranked = sorted(descriptions, key=lambda d: -(d.agreement or 0.0))[: args.top or None]
    if args.json:
        print(json.dumps({"agreement": mean, "chance": chance, "neurons": [d.__dict__ for d in ranked]}))
        return 0
    print("channel | description | PMI | held-out IoU %")
    print("------- | ----------- | --- | --------------")
    for d in ranked:
        print(f"{d.channel} | {d.description} | {d.pmi:.2f} | {d.agreement:.1f}")
    print(f"mean agreement {mean:.2f} % (chance {chance:.2f} %), layer {args.layer}, {len(descriptions)} channels")
    return 0


def add_describe_neurons_command(commands: argparse._SubParsersAction) -> None:
    describe = commands.add_parser("describe-neurons", help="name each channel of a layer by the object word with "
                                   "the highest PMI with its active regions (MILAN); agreement on held-out images")
    describe.add_argument("backbone", help="run folder or timm:NAME")
    describe.add_argument("--data", default="composed:builtin",
                          help="a source with object masks: composed:SPEC, seg:PATH")
    describe.add_argument("--layer", type=int, default=-1, help="index into the feature maps (-1: the deepest)")
    describe.add_argument("--quantile", type=float, default=0.99, help="activation quantile of the active region")
    describe.add_argument("--max-images", type=int, default=1000, help="training images used to describe")
    describe.add_argument("--img-size", type=int, help="extract at this size (default: the run's own)")
    describe.add_argument("--top", type=int, default=20, help="rows shown, best agreement first (0: all)")
    describe.add_argument("--device", default="auto")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(handler=run_describe_neurons)


def add_text_commands(commands: argparse._SubParsersAction) -> None:
    """The image-text command family, hooked into cli.build_parser with one line."""
    add_curate_command(commands)
    add_describe_neurons_command(commands)
