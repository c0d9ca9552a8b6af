"""Peak memory and speed of decoding an image folder as it grows: 10k, 50k and 200k synthetic JPEGs.

    flock /tmp/pretrainlab-bench.lock python -m bench.decode_memory [--counts 10000 50000 200000]
        [--size 48] [--decode 32] [--work /tmp/pretrainlab-decode] [--compare-src /work/main/src] [--rounds 1]

Writes one labelled folder of synthetic JPEGs (10 class subfolders, --size px, smooth random images) into
--work once, with hard-linked subsets for the smaller counts. Then, for each count, a fresh Python process
imports pretrainlab, runs `load_source("folder:DIR", image_size=--decode)` into an empty cache (decode, the
fixed stratified test split, channel statistics not included) and reports the peak resident memory
(VmHWM) over the process's life, the RSS after `import pretrainlab` alone, and decoded images/s.
The cache is served memory-mapped whatever its size (it is by default above 512 MB; below, the finished
cache is read into memory on purpose: a fixed ceiling, not growth), so the figure is the decoding's own.
--compare-src runs the same measurement with another checkout's code (e.g. main before this change),
alternating with this checkout's for --rounds rounds; the medians and the median per-round speed ratio close.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import pretrainlab.data.cache as cache
cache.MEMMAP_THRESHOLD_BYTES = 0
try:
    import pretrainlab.data.image_cache as image_cache
    image_cache.MEMMAP_THRESHOLD_BYTES = 0
except ImportError:
    pass
from pretrainlab.data import load_source
base = status("VmRSS")
started = time.perf_counter()
source = load_source("folder:" + sys.argv[1], image_size=int(sys.argv[2]))
seconds = time.perf_counter() - started
count = len(source.train) + len(source.test)
print(json.dumps({"images": count, "seconds": seconds, "images_per_second": count / seconds,
                  "import_rss": base, "peak_rss": status("VmHWM"), "shape": list(source.train.images.shape)}))
"""


def make_folder(work: Path, count: int, size: int) -> Path:
    """`count` JPEGs in 10 class folders; smaller sets are hard links into the largest (regular files)."""
    from PIL import Image

    folder = work / f"folder-{count}"
    if (folder / ".done").exists():
        return folder
    rng = np.random.default_rng(0)
    for index in range(count):
        path = folder / f"class{index % 10}" / f"{index:07d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR).save(path, quality=90)
    (folder / ".done").write_text("ok")
    return folder


def linked_subset(full: Path, count: int) -> Path:
    folder = full.parent / f"folder-{count}"
    if (folder / ".done").exists():
        return folder
    for index in range(count):
        source = full / f"class{index % 10}" / f"{index:07d}.jpg"
        target = folder / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(source, target)
    (folder / ".done").write_text("ok")
    return folder


def measure(folder: Path, decode: int, src: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="pretrainlab-cache-") as cache:
        env = {**os.environ, "PRETRAINLAB_CACHE": cache, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "2"}
        result = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(decode)], capture_output=True,
                                text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pretrainlab-decode"))
    parser.add_argument("--compare-src", type=Path, help="another checkout's src/ to measure side by side")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per count and checkout (medians)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    full = make_folder(args.work, max(args.counts), args.size)
    folders = {count: full if count == max(args.counts) else linked_subset(full, count) for count in args.counts}
    print(f"folders ready in {time.perf_counter() - started:.0f} s: {args.size} px JPEGs, decoded to {args.decode} px")
    sources = {"this checkout": Path(__file__).resolve().parents[1] / "src"}
    if args.compare_src:
        sources["compared"] = args.compare_src
    rows = []
    for count, folder in folders.items():
        for round_index in range(args.rounds):  # interleaved: this checkout, the compared one, again
            for name, src in sources.items():
                row = {"code": name, "count": count, "round": round_index, **measure(folder, args.decode, src)}
                rows.append(row)
                decoded_mb = count * args.decode * args.decode * 3 / 2**20
                print(f"{name:14s} {count:7d} images ({decoded_mb:5.0f} MB decoded): peak RSS "
                      f"{row['peak_rss'] / 2**20:6.0f} MB (import alone {row['import_rss'] / 2**20:4.0f} MB), "
                      f"{row['images_per_second']:6.0f} images/s", flush=True)
    print_medians(rows, list(sources))
    out = args.json or args.work / "decode_memory.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


def print_medians(rows: list[dict], names: list[str]) -> None:
    """Per count: median peak RSS and images/s of each checkout, and the median of the per-round speed ratios."""
    for count in sorted({row["count"] for row in rows}):
        by_name = {name: [row for row in rows if row["count"] == count and row["code"] == name] for name in names}
        parts = [f"{name}: peak RSS {statistics.median(r['peak_rss'] for r in found) / 2**20:.0f} MB, "
                 f"{statistics.median(r['images_per_second'] for r in found):.0f} images/s"
                 for name, found in by_name.items()]
        if len(names) == 2:
            ratios = [a["images_per_second"] / b["images_per_second"] for a, b in zip(*by_name.values(), strict=True)]
            parts.append(f"speed ratio (median of {len(ratios)} rounds) {statistics.median(ratios):.2f}x")
        print(f"median, {count} images: " + "; ".join(parts))

if __name__ == "__main__":
    main()
