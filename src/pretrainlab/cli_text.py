"""`pretrainlab curate | limber | describe-neurons`: the image-text commands (parsing only; logic in the library)."""

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


def add_text_commands(commands: argparse._SubParsersAction) -> None:
    """The image-text command family, hooked into cli.build_parser with one line."""
    add_curate_command(commands)


def print_json_lines(rows: list[dict]) -> None:
    for row in rows:
        print(json.dumps(row))
