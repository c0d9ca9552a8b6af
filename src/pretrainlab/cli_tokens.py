"""`pretrainlab tokenize SPEC --out tokens.npz`: a storage-efficient token dataset (SeiT++, arXiv 2312.10105).

Parses flags and calls `pretrainlab.data.tokens.dataset.tokenize_dataset`; no logic of its own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pretrainlab.cli_results import positive_int

TOKENIZE_FLAGS = (("codebook-size", int), ("code-dim", int), ("hidden", int), ("downsample", int),
                  ("vq-steps", int), ("adapt-steps", int), ("batch-size", int), ("lr", float), ("seed", int))


def run_tokenize(args: argparse.Namespace) -> int:
    from pretrainlab.config import build_config
    from pretrainlab.data.tokens.dataset import tokenize_dataset
    from pretrainlab.data.tokens.training import TokenizeConfig

    values = {flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag, _ in TOKENIZE_FLAGS}
    config = build_config(TokenizeConfig, {k: v for k, v in values.items() if v is not None}, "tokenize")
    summary = tokenize_dataset(args.spec, args.out, config, args.max_train, args.img_size,
                               show_progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    meta, storage = summary["meta"], summary["storage"]
    grid = meta["grid"]
    print(f"wrote {summary['out']}: {sum(meta['images'].values())} images as {grid[0]}x{grid[1]} grids of "
          f"{meta['codebook_size']} codes ({meta['codes_used']} used), tokenizer {meta['tokenizer_id']}")
    print(f"held-out reconstruction: PSNR {meta['reconstruction']['psnr_db']:.1f} dB (MSE "
          f"{meta['reconstruction']['mse']:.4f}); augmented tokens matching the augmented image's: TokenAdapt "
          f"{meta['token_adapt_agreement']:.1f} %, resampling the grid {meta['grid_resampling_agreement']:.1f} %")
    print(f"bytes per image: token grid {storage['token_grid_bytes']} (packed {storage['packed_grid_bytes']:g}), "
          f"file {storage['file_bytes_per_image']:.1f}, uint8 pixels {storage['pixel_bytes']}, JPEG "
          f"{storage['jpeg_bytes']:.1f} ({storage['jpeg_source']})")
    print(f"pixels / token grid {storage['pixels_over_tokens']:.1f}x, JPEG / token grid "
          f"{storage['jpeg_over_tokens']:.1f}x; train on it with --data tokens:{summary['out']} "
          "--backbone vit_token_nano --method mtm")
    return 0


def add_tokens_commands(commands: argparse._SubParsersAction) -> None:
    tokenize = commands.add_parser("tokenize", help="train a small VQ tokenizer on a dataset and store the dataset as "
                                   "code grids (a token file for --data tokens:PATH)")
    tokenize.add_argument("spec", help="the data spec to tokenize (builtin, npz:PATH, folder:PATH, ...)")
    tokenize.add_argument("--out", type=Path, required=True, help="the token file to write (*.npz)")
    tokenize.add_argument("--max-train", type=positive_int,
                          help="train the tokenizer on a class-balanced subset of N images (all are encoded)")
    tokenize.add_argument("--img-size", type=positive_int, help="decode size of file sources")
    tokenize.add_argument("--json", action="store_true", help="print the tokenizer's facts and storage as JSON")
    tokenize.add_argument("--no-progress", action="store_true")
    group = tokenize.add_argument_group("tokenizer (VQ-VAE with an EMA codebook; grid = image size / 2**downsample)")
    for flag, kind in TOKENIZE_FLAGS:
        group.add_argument(f"--{flag}", type=kind)
    tokenize.set_defaults(handler=run_tokenize)
