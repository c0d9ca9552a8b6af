"""Which representation of a run transfers best: before the projection head, after each head layer, or a prefix.

Two measurements on Fashion-MNIST (`../shared/data/fashion_mnist.npz`), kNN (T=0.07) and linear probe on
frozen features of the 60,000 training images, top-1 % on the 10,000 test images, through the registered
protocols on `RUN@SELECTOR` targets (features of all selectors of a run are extracted in one pass):

    python bench/head_layers.py --heads runs/bench-methods/simclrv2           # backbone, head.0, head.1, head.2
    python bench/head_layers.py --dims runs/bench-methods/matryoshka runs/bench-methods/simclr
    python bench/head_layers.py --dims runs/matryoshka-vit2d --selectors layer1,dim32 layer2,dim64 dim128

`--heads` measures every head layer the run's method names ("Investigating the Benefits of Projection Head
for Representation Learning", arXiv 2403.11391; SimCLRv2, arXiv 2006.10029, keeps head.0). `--dims`
measures the first D pooled features (after the first L blocks of a ViT) of each run (Matryoshka /
Starbucks, arXiv 2410.13230, against a plain run's prefix slices). Rows go to bench/results/head_layers/
and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pretrainlab.backbones.selected import pooled_at_depths
from pretrainlab.data import load_source
from pretrainlab.data.source import ImageSource
from pretrainlab.data.views import resize_for_eval
from pretrainlab.eval import EvalContext, evaluate
from pretrainlab.eval.features import match_channels, normalisation
from pretrainlab.eval.representation import load_run_method, parse_selector, read_run_config, representation_names
from pretrainlab.eval.target import load_target

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "fashion_mnist.npz"
RESULTS = ROOT / "bench" / "results" / "head_layers"


@torch.no_grad()
def named_features(run_dir: Path, selectors: list[str], source: ImageSource) -> dict[str, dict[str, torch.Tensor]]:
    """{split: {selector: (N, D)}} in one pass of the rebuilt method per split (the protocols' preprocessing).

    Equal to what `RUN@SELECTOR` targets extract one by one (tests/test_head_layers.py checks that path).
    """
    method = load_run_method(run_dir)
    target = load_target(str(run_dir), source.image_size[0], source.channels)
    mean, std = normalisation(target, source.train.images)
    nested = {selector: parse_selector(selector) for selector in selectors if parse_selector(selector).nested}
    depths = sorted({selection.depth for selection in nested.values()})
    features: dict[str, dict[str, torch.Tensor]] = {}
    for split in ("train", "test"):
        images = getattr(source, split).images
        chunks: dict[str, list[torch.Tensor]] = {selector: [] for selector in selectors}
        for start in range(0, len(images), 512):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + 512]))
            x = resize_for_eval(match_channels(batch, target.in_chans), target.img_size, mean, std)
            named = method.representations(x)
            by_depth = pooled_at_depths(method.backbone.model, x, depths) if depths else {}
            for selector in selectors:
                if selector in nested:
                    chunks[selector].append(by_depth[nested[selector].depth][:, : nested[selector].dim])
                else:
                    chunks[selector].append(named[selector])
        features[split] = {selector: torch.cat(parts).float() for selector, parts in chunks.items()}
    return features


def measure_run(run_dir: Path, selectors: list[str], source: ImageSource, protocols: list[str]) -> list[dict]:
    """kNN / linear top-1 of `RUN@SELECTOR` for every selector, through the registered protocols."""
    started = time.perf_counter()
    features = named_features(run_dir, selectors, source)
    rows = []
    for selector in selectors:
        spec = f"{run_dir}@{selector}"
        target = load_target(spec, source.image_size[0], source.channels)
        cached = {split: features[split][selector] for split in ("train", "test")}
        context = EvalContext(target, source, torch.device("cpu"), _features=cached)
        row = {"spec": spec, "embed_dim": target.backbone.embed_dim}
        for protocol in protocols:
            result = evaluate(context, protocol)[0]
            row[f"{protocol}_top1"] = result.value
            if protocol == "knn":
                row["knn_k"] = result.settings["k"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"{run_dir}: {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def head_selectors(run_dir: Path) -> list[str]:
    resolved = read_run_config(run_dir)["resolved"]
    names = representation_names(load_run_method(run_dir), int(resolved["img_size"]), int(resolved["in_chans"]))
    return [name for name in names if name == "backbone" or name.startswith("head.")]


def write_rows(rows: list[dict], key: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    (RESULTS / f"{key}.json").write_text(json.dumps([{**row, "measured": stamp} for row in rows], indent=2))


def print_table(rows: list[dict], protocols: list[str]) -> None:
    header = "| representation | width | " + " | ".join(f"{p} top-1" for p in protocols) + " |"
    print(header)
    print("|" + " --- |" * (2 + len(protocols)))
    for row in rows:
        values = " | ".join(f"{row[f'{p}_top1']:.2f}" for p in protocols)
        print(f"| `{row['spec']}` | {row['embed_dim']} | {values} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=Path, help="a run folder: measure backbone and every head layer")
    parser.add_argument("--dims", type=Path, nargs="+", help="run folders: measure their nested sizes")
    parser.add_argument("--selectors", nargs="+", default=["dim16", "dim32", "dim64", "dim128"],
                        help="sizes for --dims: dimD or layerL,dimD")
    parser.add_argument("--protocols", default="knn,linear", help="for --heads (--dims uses kNN only)")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"missing {DATA}: this benchmark reads the offline Fashion-MNIST copy in ../shared/data")
    source = load_source(f"npz:{DATA}")
    if args.heads:
        protocols = args.protocols.split(",")
        rows = measure_run(args.heads, head_selectors(args.heads), source, protocols)
        write_rows(rows, f"heads-{args.heads.name}")
        print_table(rows, protocols)
    if args.dims:
        rows = [row for run in args.dims for row in measure_run(run, args.selectors, source, ["knn"])]
        write_rows(rows, "dims-" + "-".join(run.name for run in args.dims))
        print_table(rows, ["knn"])


if __name__ == "__main__":
    main()
