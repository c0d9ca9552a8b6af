"""Attention patterns and filter health at the docs/methods.md budget (issue 11 parts 4 and 5): backbones pre-trained
on 10,000 Fashion-MNIST images for 10 epochs of 256 by bench/methods_table.py (and the robustness study's runs,
trained at the same budget), explained on Fashion-MNIST test images.

    python bench/methods_table.py --methods mae                                          # the ViT runs, then:
    python bench/methods_table.py --methods nmi_had --option nmi_had:teacher=runs/bench-methods/mae
    python bench/methods_table.py --methods supervised --backbone vit_nano_patch4 --tag vit \\
        --train optimizer=adamw --train lr=0.0005 --train weight_decay=0.05
    python -m bench.explain_methods_budget --part attention   # ViTs found under runs/bench-methods
    python -m bench.explain_methods_budget --part filters     # CNNs (links to --main and --study run folders)
    python -m bench.explain_methods_budget --render           # two tables in docs/explain.md

A run that is not there is skipped (and named). Read-only run folders of other checkouts are linked file by file
into runs/explain-study/methods-budget/NAME, so figures and records land in this repository's runs/.
kNN and linear top-1 come from the rows bench/methods_table.py wrote (bench/results/methods/*.json).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from bench.explain_robust import FASHION, STUDY, link_files
from bench.explain_study import RESULTS, load, measure, ordered, random_run

ROOT = Path(__file__).resolve().parent.parent
LINKS = ROOT / "runs" / "explain-study" / "methods-budget"
OWN = ROOT / "runs" / "bench-methods"
MAIN = Path("/work/main/runs/bench-methods")
PAGE = ROOT / "docs" / "explain.md"
METHOD_ROWS = ROOT / "bench" / "results" / "methods"
# label -> (run folder name under runs/bench-methods, row file of bench/methods_table.py)
VITS = {"random": ("random-vit_nano_patch4", "random-vit_nano_patch4"), "MAE": ("mae", "mae"),
        "DINO": ("dino-vit", "dino-vit"), "supervised": ("supervised-vit", "supervised-vit"),
        "NMI-HAD (MAE teacher)": ("nmi_had", "nmi_had")}
# label -> (where the run is: "main", "study" or "random", its folder name, row file)
CNNS = {"random": ("random", "random-tinycnn", "random-tinycnn"), "SimCLR": ("study", "simclr-fm", ""),
        "supervised": ("study", "supervised-fm", ""), "SimCLR + PGD-AT": ("study", "simclr-fm-adv-pgd", ""),
        "SimCLR + TRADES": ("study", "simclr-fm-adv-trades", ""),
        "Barlow Twins": ("main", "barlowtwins", "barlowtwins"), "MoCo v2": ("main", "mocov2", "mocov2"),
        "PixPro": ("main", "pixpro", "pixpro"), "VICReg": ("main", "vicreg", "vicreg")}


def linked(source: Path) -> Path | None:
    """runs/explain-study/methods-budget/NAME with links to `source`'s weights, head and config (None: no run)."""
    if not (source / "backbone.safetensors").exists():
        return None
    link_files(source, LINKS / source.name)
    return LINKS / source.name


def vit_folder(name: str) -> Path | None:
    if name.startswith("random-"):
        return random_run(name.removeprefix("random-"), LINKS)
    return OWN / name if (OWN / name / "backbone.safetensors").exists() else None


def cnn_folder(where: str, name: str, main: Path, study: Path) -> Path | None:
    if where == "random":
        return random_run("tinycnn", LINKS)
    return linked((main if where == "main" else study) / name)


def measure_part(part: str, main: Path, study: Path) -> None:
    data = f"npz:{FASHION}"
    if part == "attention":
        for label, (name, _) in VITS.items():
            folder = vit_folder(name)
            if folder is None:
                print(f"skipped {label}: no runs/bench-methods/{name} (run bench/methods_table.py first)")
                continue
            measure("attention-methods", label, folder, ["attention"], data, 64, 100, {})
    else:
        for label, (where, name, _) in CNNS.items():
            folder = cnn_folder(where, name, main, study)
            if folder is None:
                print(f"skipped {label}: no {where} run {name}")
                continue
            measure("filters-methods", label, folder, ["filters"], data, 1, 100, {})


def method_row(row_name: str) -> dict:
    path = METHOD_ROWS / f"{row_name}.json"
    return json.loads(path.read_text()) if row_name and path.exists() else {}


def top1(row: dict, key: str) -> str:
    return f"{row[key]:.1f}" if key in row else "-"


def attention_table() -> str:
    entries = ordered(load("attention-methods"), VITS)
    if not entries:
        return "(not measured yet)"
    lines = ["| backbone | kNN / linear top-1 % | mean attention distance (px), layer 0 → 3 | "
             "head-mean NMI, layer 0 → 3 | local / hybrid / global layers | layer classes (0 → 3) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for entry in entries:
        name, row_name = VITS[entry["label"]]
        arrays = np.load(vit_folder(name) / "explain" / "attention.npz")
        distance = " / ".join(f"{value:.1f}" for value in arrays["mean_distance"].mean(axis=1))
        nmi = " / ".join(f"{value:.3f}" for value in arrays["nmi"].mean(axis=1))
        classes = ", ".join(str(c) for c in arrays["layer_class"])
        counts = [int((arrays["layer_class"] == kind).sum()) for kind in ("local", "hybrid", "global")]
        row = method_row(row_name)
        lines.append(f"| {entry['label']} | {top1(row, 'knn_top1')} / {top1(row, 'linear_top1')} | {distance} | "
                     f"{nmi} | {' / '.join(map(str, counts))} | {classes} |")
    return "\n".join(lines)


def filters_table() -> str:
    entries = ordered(load("filters-methods"), CNNS)
    if not entries:
        return "(not measured yet)"
    lines = ["| backbone | kNN / linear top-1 % | degenerate share | variance entropy (layer 0 / 1 / 2; mean) | "
             "orthogonality (layer 0 / 1 / 2; mean) |", "| --- | --- | --- | --- | --- |"]
    for entry in entries:
        where, name, row_name = CNNS[entry["label"]]
        folder = random_run("tinycnn", LINKS) if where == "random" else LINKS / name
        arrays = np.load(folder / "explain" / "filters.npz")
        values = {row["metric"]: row["value"] for row in entry["rows"]}
        entropy = " / ".join(f"{v:.3f}" for v in arrays["variance_entropy"])
        orthogonality = " / ".join(f"{v:.3f}" for v in arrays["orthogonality"])
        row = method_row(row_name)
        lines.append(f"| {entry['label']} | {top1(row, 'knn_top1')} / {top1(row, 'linear_top1')} | "
                     f"{values['degenerate']:.4f} | {entropy}; {values['variance_entropy']:.3f} | "
                     f"{orthogonality}; {values['orthogonality']:.3f} |")
    return "\n".join(lines)


def render() -> None:
    text = PAGE.read_text()
    for name, table in (("attention-methods", attention_table()), ("filters-methods", filters_table())):
        text = re.sub(rf"<!-- {name} -->.*?<!-- /{name} -->", f"<!-- {name} -->\n{table}\n<!-- /{name} -->", text,
                      flags=re.DOTALL)
    PAGE.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["attention", "filters"])
    parser.add_argument("--main", type=Path, default=MAIN, help="main checkout's runs/bench-methods (read only)")
    parser.add_argument("--study", type=Path, default=STUDY, help="the robustness study's runs (read only)")
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    if args.part:
        measure_part(args.part, args.main, args.study)
    if args.render:
        render()
    print(f"results in {RESULTS}")


if __name__ == "__main__":
    main()
