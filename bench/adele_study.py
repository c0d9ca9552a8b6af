"""ADELE (arXiv 2110.03740) on noisy masks: dense-probe mIoU with and without ADELE at several noise levels.

The dense protocol (a linear 1x1-convolution head on frozen feature maps) trains on training masks corrupted
by `mask_noise` and is scored on the clean test masks, once plainly and once with `adele=true`. Data:
`composed:` canvases of Fashion-MNIST garments (56 px, 2 to 4 objects each, 11 mask classes). Backbone: a
SimCLR tinycnn pre-trained on Fashion-MNIST (read-only, from the robustness study's runs). Head: 20 epochs,
AdamW lr 0.1, batch 32, seed 0; noise seed 0.

    python bench/adele_study.py --noise clean,dilate:2        # measure rows (one JSON per row and mode)
    python bench/adele_study.py --render                      # write the table into docs/adele.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from pretrainlab.data import load_source
from pretrainlab.eval import EvalContext, evaluate
from pretrainlab.eval.target import load_run_target

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.` imports when run as a script
from bench.common import replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "adele"
PAGE = ROOT / "docs" / "adele.md"
BACKBONE_RUN = Path("/work/wt/attack/runs/study/simclr-fm")
DATA = "composed:npz:/work/shared/data/fashion_mnist.npz:500"
OPTIONS = {"dense_epochs": 20, "seed": 0, "mask_noise_seed": 0}


def file_key(noise: str, adele: bool) -> str:
    return noise.replace(":", "").replace("+", "_").replace(".", "") + ("-adele" if adele else "")


def measure(noise: str, adele: bool, run: Path, data: str) -> dict:
    source = load_source(data)
    options = {**OPTIONS, **({} if noise == "clean" else {"mask_noise": noise}), **({"adele": True} if adele else {})}
    started = time.perf_counter()
    records = evaluate(EvalContext(load_run_target(run), source, torch.device("cpu"), options), "dense")
    miou = next(r for r in records if r.metric == "mIoU")
    settings = miou.settings
    adele_record = settings.get("adele", {})
    return {"noise": noise, "adele": adele, "data": data, "backbone_run": str(run), "options": options,
            "mIoU": miou.value, "pixel_accuracy": next(r.value for r in records if r.metric == "pixel_accuracy"),
            "noisy_pixel_share": settings.get("noisy_pixel_share", 0.0), "onsets": adele_record.get("onsets"),
            "corrected_pixels": adele_record.get("corrected_pixels"),
            "train_iou_curves": adele_record.get("train_iou_curves"), "per_class_iou": settings["per_class_iou"],
            "seconds": time.perf_counter() - started}


def render() -> None:
    rows = {(r["noise"], r["adele"]): r for r in (json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json")))}
    noises = sorted({noise for noise, _ in rows}, key=lambda n: (n != "clean", rows.get((n, False), {}).get(
        "noisy_pixel_share", 0)))
    lines = ["| training masks | pixels changed | mIoU plain | mIoU ADELE | ADELE - plain | onsets (class: epoch) "
             "| pixels relabelled |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for noise in noises:
        plain, adele = rows.get((noise, False)), rows.get((noise, True))
        share = (plain or adele)["noisy_pixel_share"] * 100
        plain_text = f"{plain['mIoU']:.2f}" if plain else "-"
        adele_text = f"{adele['mIoU']:.2f}" if adele else "-"
        delta = f"{adele['mIoU'] - plain['mIoU']:+.2f}" if plain and adele else "-"
        onsets = ", ".join(f"{c}: {e}" for c, e in (adele or {}).get("onsets", {}).items()) if adele else "-"
        relabelled = f"{adele['corrected_pixels']:,}" if adele else "-"
        lines.append(f"| {noise} | {share:.1f} % | {plain_text} | {adele_text} | {delta} | {onsets or 'none'} | "
                     f"{relabelled} |")
    text = PAGE.read_text()
    PAGE.write_text(replace_block(text, "table", "\n".join(lines)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", default="", help="comma-separated: clean or mask_noise specs")
    parser.add_argument("--modes", default="plain,adele", help="plain, adele or both")
    parser.add_argument("--run", type=Path, default=BACKBONE_RUN, help="the backbone's run folder")
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--render", action="store_true", help="write the table into docs/adele.md")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for noise in filter(None, args.noise.split(",")):
        for mode in filter(None, args.modes.split(",")):
            key = file_key(noise, mode == "adele")
            if (RESULTS / f"{key}.json").exists():  # resumable: a measured row is kept
                continue
            row = {**measure(noise, mode == "adele", args.run, args.data), "measured": time.strftime("%Y-%m-%d %H:%M")}
            RESULTS.mkdir(parents=True, exist_ok=True)
            (RESULTS / f"{key}.json").write_text(json.dumps(row, indent=1))
            print(json.dumps({k: v for k, v in row.items() if k != "train_iou_curves"}), flush=True)
    if args.render:
        render()


if __name__ == "__main__":
    main()
