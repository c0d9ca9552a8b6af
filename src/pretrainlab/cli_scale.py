"""`pretrainlab shard`: write a dataset as WebDataset tar shards for streaming (`--data shards:DIR`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_shard(args: argparse.Namespace) -> int:
    from pretrainlab.data.shard_writer import parse_size, write_shards

    index = write_shards(args.data, args.out, parse_size(args.shard_size), args.seed)
    for split, entries in index["splits"].items():
        print(f"{split}: {sum(e['count'] for e in entries)} images in {len(entries)} shards "
              f"({sum(e['bytes'] for e in entries) / 1e6:.1f} MB)")
    if index["skipped"]:
        print(f"skipped {index['skipped']} unreadable files")
    print(f"wrote {Path(args.out) / 'index.json'}; train with --data shards:{args.out}")
    return 0


def add_scale_commands(commands: argparse._SubParsersAction) -> None:
    shard = commands.add_parser("shard", help="write a dataset as WebDataset tar shards (for --data shards:DIR)")
    shard.add_argument("data", help="folder:PATH | npz:PATH (or any --data spec; decoded ones are stored as PNG)")
    shard.add_argument("--out", type=Path, required=True, help="a new or empty folder for the shards")
    shard.add_argument("--shard-size", default="1GB", help="bytes per shard, e.g. 1GB, 256MB (default 1GB)")
    shard.add_argument("--seed", type=int, default=0, help="seed of the random order the samples are written in")
    shard.set_defaults(handler=run_shard)
