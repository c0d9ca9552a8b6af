"""Loader throughput on the same 50,000 CIFAR-10 JPEGs: shards, the memory-mapped cache, lightly's per-sample loader.

    flock /tmp/pretrainlab-bench.lock python -m bench.loader_vs_lightly [--work /tmp/pretrainlab-loader]
        [--images 50000] [--slow-images 10240] [--batch 512] [--rounds 3]

The training split of ../shared/data/cifar10_jpeg.npz is written once into --work (never into the repo):
as tar shards (`pretrainlab shard`, 8 MB each) and as one JPEG file per image for lightly. Each candidate
then delivers --images images (--slow-images for the SimCLRTransform rows) in batches of --batch, and the
steady images/s is printed (after the batches prefetched by the time the first arrives; worker start-up
is reported apart):
- shards, 1 and 2 workers: `--data shards:` streaming (read, shuffle buffer, decode, hand over uint8 batches);
- cache: the decoded uint8 cache file, memory-mapped, batches gathered by the Trainer's own BatchPlan;
- lightly 1.6.0 `LightlyDataset` over the JPEG folder, 1 and 2 DataLoader workers, with a bare `ToTensor`
  (the decode floor of a per-sample loader) and with `SimCLRTransform` (what a lightly SimCLR run's workers do:
  decode plus two augmented views per image; pretrainlab makes those views batched on the device instead).
The candidates run in turn, --rounds times (interleaved, so load on a shared machine falls on every one
alike); each row prints its median images/s over the rounds and its ratio to its lightly peer, the median
of the per-round ratios: the shard loader against lightly ToTensor with the same number of workers, the
cache against lightly ToTensor with 2 workers, lightly's SimCLRTransform rows against their ToTensor rows.
Writes the table as JSON to --json (default: WORK/loader_vs_lightly.json). Needs the `bench` extra (lightly).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from bench.common import CIFAR


def timed(batches: Iterable, images: int, batch: int, warm: int) -> dict[str, float]:
    """Consumes `images // batch` batches; images/s in the steady state, and the first batch's seconds.

    The steady state starts after `warm` batches: the first and those the loader's workers may have ready
    when it arrives, so a short measurement does not count prefetched batches as fast.
    """
    started = time.perf_counter()
    steps = images // batch
    if steps <= warm + 1:
        raise SystemExit(f"{images} images are {steps} batches: need more than {warm + 1} for a steady state")
    first = steady = None
    for step, _ in zip(range(steps), batches, strict=False):
        if step == 0:
            first = time.perf_counter()
        if step == warm - 1:
            steady = time.perf_counter()
    end = time.perf_counter()
    return {"images_per_second": (steps - warm) * batch / (end - steady), "startup_seconds": first - started}


def prepare(work: Path, cifar: Path) -> tuple[Path, Path]:
    """Shards and a JPEG folder of the CIFAR-10 training split in `work` (written once, reused)."""
    from pretrainlab.data.shard_writer import parse_size, write_shards

    shards, folder = work / "shards", work / "jpeg"
    if not (shards / "index.json").exists():
        write_shards(f"npz:{cifar}", shards, parse_size("8MB"))
    if not (folder / "done").exists():
        with np.load(cifar) as archive:
            data, offsets, labels = archive["jpeg_train"], archive["offsets_train"], archive["y_train"]
        for label in np.unique(labels):
            (folder / f"{label}").mkdir(parents=True, exist_ok=True)
        for i in range(len(offsets) - 1):
            (folder / f"{labels[i]}" / f"{i:05d}.jpg").write_bytes(data[offsets[i] : offsets[i + 1]].tobytes())
        (folder / "done").write_text("ok")
    return shards, folder


def shard_batches(shards: Path, batch: int, workers: int) -> Iterable:
    from pretrainlab.data.shard_feed import ShardFeed
    from pretrainlab.data.shard_source import open_stream

    feed = ShardFeed(open_stream(str(shards)).train, batch, seed=0, rank=0, world_size=1, workers=workers,
                     shuffle_buffer=2000)
    return (images for _, images, _, _ in feed.batches(0, feed.steps_per_epoch, torch.device("cpu")))


def cache_batches(cifar: Path, batch: int) -> Iterable:
    """The decoded cache file opened memory-mapped (CIFAR's 150 MB would otherwise be read into memory)."""
    from pretrainlab.data import load_source
    from pretrainlab.data.cache import cache_dir, cache_key, file_fingerprint
    from pretrainlab.data.loader import MemoryFeed
    from pretrainlab.data.source import ImageSet

    load_source(f"npz:{cifar}")  # decodes once into the cache
    mapped = np.load(cache_dir() / f"{cache_key('npz-jpeg', file_fingerprint(cifar), 'train')}.npy", mmap_mode="r")
    feed = MemoryFeed(ImageSet(mapped), batch, seed=0)
    return (images for _, images, _, _ in feed.batches(0, feed.steps_per_epoch, torch.device("cpu")))


def lightly_batches(folder: Path, batch: int, workers: int, transform: Callable) -> Iterable:
    from lightly.data import LightlyDataset

    dataset = LightlyDataset(input_dir=str(folder), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=False)
    return iter(loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pretrainlab-loader"))
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--slow-images", type=int, default=10_240,
                        help="images for the lightly SimCLRTransform rows (their rate is steady; 50,000 takes long)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cifar", type=Path, default=CIFAR, help="cifar10_jpeg.npz (default: ../shared/data/)")
    args = parser.parse_args()
    if not args.cifar.exists():
        raise SystemExit(f"{args.cifar} not found: this benchmark reads the offline CIFAR-10 JPEG copy")
    import torchvision.transforms as T
    from lightly.transforms import SimCLRTransform

    torch.set_num_threads(1)  # the loaders' own processes do the work; the consumer only receives
    shards, folder = prepare(args.work, args.cifar)
    candidates = {
        "shards, 1 worker": lambda: shard_batches(shards, args.batch, 1),
        "shards, 2 workers": lambda: shard_batches(shards, args.batch, 2),
        "decoded cache, memory-mapped": lambda: cache_batches(args.cifar, args.batch),
        "lightly ToTensor, 1 worker": lambda: lightly_batches(folder, args.batch, 1, T.ToTensor()),
        "lightly ToTensor, 2 workers": lambda: lightly_batches(folder, args.batch, 2, T.ToTensor()),
        "lightly SimCLRTransform, 1 worker": lambda: lightly_batches(
            folder, args.batch, 1, SimCLRTransform(input_size=32, gaussian_blur=0.0)),
        "lightly SimCLRTransform, 2 workers": lambda: lightly_batches(
            folder, args.batch, 2, SimCLRTransform(input_size=32, gaussian_blur=0.0)),
    }
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in candidates}
    for round_index in range(args.rounds):
        for name, make in candidates.items():
            workers = 1 if name.endswith("1 worker") else 2 if name.endswith("2 workers") else 0
            prefetch = 4 if name.startswith("shards") else 2  # ShardFeed's prefetch_factor; PyTorch's default
            row = timed(make(), args.slow_images if "SimCLR" in name else args.images, args.batch,
                        1 + prefetch * workers)
            rounds[name].append(row)
            print(f"round {round_index + 1}: {name:36s} {row['images_per_second']:9.0f} images/s  "
                  f"(first batch after {row['startup_seconds']:.1f} s)", flush=True)
    table = summarise(rounds)
    print(f"data: CIFAR-10 (JPEG q75) training split, {args.images} images a measurement ({args.slow_images} for "
          f"SimCLRTransform) in batches of {args.batch}, 32 px; {os.cpu_count()} CPU cores; {args.rounds} rounds")
    print(f"  {'loader':36s} {'median images/s':>15s} {'(min-max)':>19s} {'first batch':>11s}  ratio to its peer")
    for name, row in table.items():
        spread = f"({row['min']:.0f}-{row['max']:.0f})"
        print(f"  {name:36s} {row['images_per_second']:15.0f} {spread:>19s} {row['startup_seconds']:9.1f} s  "
              f"{row['ratio']:6.2f}x {row['peer']}")
    out = args.json or args.work / "loader_vs_lightly.json"
    out.write_text(json.dumps({"images": args.images, "slow_images": args.slow_images, "batch": args.batch,
                               "cores": os.cpu_count(), "rounds": rounds, "table": table}, indent=1))
    print(f"wrote {out}")


def peer_of(name: str) -> str:
    """The lightly row a candidate is compared with: ToTensor with the same workers (the cache has none: 2)."""
    return "lightly ToTensor, 1 worker" if name.endswith("1 worker") else "lightly ToTensor, 2 workers"


def summarise(rounds: dict[str, list[dict[str, float]]]) -> dict[str, dict]:
    """Median images/s and start-up per candidate; its ratio to its peer is the median of per-round ratios."""
    table = {}
    for name, rows in rounds.items():
        rates = [row["images_per_second"] for row in rows]
        peer = peer_of(name)
        ratios = [row["images_per_second"] / other["images_per_second"] for row, other in zip(rows, rounds[peer],
                                                                                               strict=True)]
        table[name] = {"images_per_second": statistics.median(rates), "min": min(rates), "max": max(rates),
                       "startup_seconds": statistics.median(row["startup_seconds"] for row in rows),
                       "ratio": statistics.median(ratios), "peer": peer}
    return table

if __name__ == "__main__":
    main()
