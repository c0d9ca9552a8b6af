"""The explain study of docs/explain.md: attribution quality, attention patterns and filter health of small
backbones trained by bench/explain_study_runs.sh (budget stated there and in the page).

    bench/explain_study_runs.sh                      # pre-train the backbones (nice'd, resumable)
    python bench/explain_study.py --part quality     # cam + attribution on composed:builtin canvases, CNNs
    python bench/explain_study.py --part attention   # attention patterns of the ViTs
    python bench/explain_study.py --part filters     # filter health of the CNNs (and their metrics.jsonl)
    python bench/explain_study.py --render           # the tables in docs/explain.md

Each (part, backbone) writes bench/results/explain/PART-NAME.json with the summary records, so parts can be
(re)measured separately; figures land in each run's explain/ folder (random baselines: runs/explain-study/random-*).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from pretrainlab.backbones import create_backbone, save_backbone
from pretrainlab.explain import ExplainSettings
from pretrainlab.explain.session import explain_backbone

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "explain-study"
RESULTS = ROOT / "bench" / "results" / "explain"
PAGE = ROOT / "docs" / "explain.md"
CNNS = {"random": "random-tinycnn", "SimCLR": "cnn-simclr", "supervised": "cnn-supervised"}
VITS = {"random": "random-vit_nano_patch4", "MAE": "vit-mae", "DINO": "vit-dino", "supervised": "vit-supervised",
        "NMI-HAD (MAE teacher)": "vit-nmi_had", "supervised, 155 steps": "vit-supervised-long"}
QUALITY = {"data": "composed:builtin:400", "images": 12, "probe_images": 400,
           "options": {"road_percentiles": [20, 50, 80], "insertion_steps": 8, "rise_masks": 256}}


def random_run(name: str, under: Path = RUNS) -> Path:
    """A run-like folder under `under` holding a random-init (seed 0, fair init) backbone at 28 px, so it is
    explained like a run (bench/explain_robust.py and bench/explain_methods_budget.py keep theirs elsewhere)."""
    folder = under / f"random-{name}"
    if not (folder / "backbone.safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_backbone(create_backbone(name, 28, 1), folder / "backbone.safetensors")
    return folder


def run_folder(name: str) -> Path:
    if name.startswith("random-"):
        return random_run(name.removeprefix("random-"))
    folder = RUNS / name
    if not (folder / "backbone.safetensors").exists():
        raise SystemExit(f"{folder} is not finished: run bench/explain_study_runs.sh first")
    return folder


def measure(part: str, label: str, folder: Path, what: list[str], data: str, images: int, probe_images: int,
            options: dict) -> None:
    settings = ExplainSettings(images=images, probe_images=probe_images, options=dict(options), show_progress=False)
    outcome = explain_backbone(str(folder), data, what, settings, store=RUNS / "explain.db")
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [result.to_dict() for result in outcome.results]
    record = {"part": part, "label": label, "rows": rows}
    (RESULTS / f"{part}-{folder.name}.json").write_text(json.dumps(record, indent=1))


def measure_knn(label: str, folder: Path) -> None:
    """kNN top-1 (k=200, T=0.07) on the builtin digits' test split, frozen features of the 4,000 training images."""
    from pretrainlab.data import load_source
    from pretrainlab.eval import EvalContext, evaluate
    from pretrainlab.eval.target import load_run_target

    result = evaluate(EvalContext(load_run_target(folder), load_source("builtin"), torch.device("cpu")), "knn")[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"knn-{folder.name}.json").write_text(json.dumps({"label": label, "rows": [result.to_dict()]}))


def measure_part(part: str, only: list[str] | None) -> None:
    if part == "quality":
        for label, name in CNNS.items():
            if not only or name in only:
                measure(part, label, run_folder(name), ["cam", "attribution"], QUALITY["data"], QUALITY["images"],
                        QUALITY["probe_images"], QUALITY["options"])
    elif part == "attention":
        for label, name in VITS.items():
            if not only or name in only:
                measure(part, label, run_folder(name), ["attention"], "builtin", 64, 100, {})
    elif part == "knn":  # does each ViT beat its random init on a real evaluation (NMI-HAD's row)
        for label, name in VITS.items():
            if not only or name in only:
                measure_knn(label, run_folder(name))
    elif part == "filters":
        for label, name in CNNS.items():
            if not only or name in only:
                measure(part, label, run_folder(name), ["filters"], "builtin", 1, 100, {})


def load(part: str) -> list[dict]:
    rows = []
    for path in sorted(RESULTS.glob(f"{part}-*.json")):
        data = json.loads(path.read_text())
        # "attention-*" also matches bench/explain_methods_budget.py's "attention-methods-*" files: keep a
        # file only when it is this part's (recorded since; inferred from the name for older files)
        methods_part = f"{part}-methods"
        owner = data.get("part") or (methods_part if path.stem.startswith(methods_part + "-") else part)
        if owner == part:
            rows.append(data)
    return rows


def ordered(entries: list[dict], labels: dict[str, str]) -> list[dict]:
    order = list(labels)
    return sorted(entries, key=lambda entry: order.index(entry["label"]) if entry["label"] in order else 99)


def quality_table(part: str = "quality", labels: dict[str, str] = CNNS) -> str:
    """One row per method; each cell lists the backbones' values in the header's order (bench/explain_robust.py
    renders its robust vs standard table with it too)."""
    entries = ordered(load(part), labels)
    if not entries:
        return "(not measured yet)"
    values = {(e["label"], row["metric"]): row["value"] for e in entries for row in e["rows"]}
    methods = list(dict.fromkeys(row["metric"].split("@")[1] for e in entries for row in e["rows"]))
    names = [e["label"] for e in entries]
    metrics = [("road", "ROAD ↑", 3), ("insertion", "insertion ↑", 2), ("deletion", "deletion ↓", 2),
               ("pointing", "pointing % ↑", 0), ("box_iou", "box IoU ↑", 2)]
    order = " / ".join(names)
    lines = ["| method | " + " | ".join(f"{title} ({order})" for _, title, _ in metrics) + " |",
             "| --- | " + " | ".join("---" for _ in metrics) + " |"]
    for method in methods:
        cells = []
        for metric, _, digits in metrics:
            numbers = [values.get((label, f"{metric}@{method}")) for label in names]
            cells.append(" / ".join("-" if n is None else f"{n:.{digits}f}" for n in numbers))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attention_table() -> str:
    entries = ordered(load("attention"), VITS)
    if not entries:
        return "(not measured yet)"
    knn = {entry["label"]: entry["rows"][0]["value"] for entry in load("knn")}
    lines = ["| backbone | kNN top-1 % | mean attention distance (px) | NMI, last layer | "
             "local / hybrid / global layers | layer classes (0 → 3) |", "| --- | --- | --- | --- | --- | --- |"]
    for entry in entries:
        values = {row["metric"]: row["value"] for row in entry["rows"]}
        folder = RUNS / VITS.get(entry["label"], "") / "explain" / "attention.npz"
        classes = ""
        if folder.exists():
            import numpy as np

            classes = ", ".join(str(c) for c in np.load(folder)["layer_class"])
        top1 = f"{knn[entry['label']]:.1f}" if entry["label"] in knn else "-"
        lines.append(f"| {entry['label']} | {top1} | {values['mean_distance']:.1f} | {values['nmi_last']:.3f} | "
                     f"{values['local_layers']:.0f} / {values['hybrid_layers']:.0f} / {values['global_layers']:.0f} | "
                     f"{classes} |")
    return "\n".join(lines)


def filters_table() -> str:
    entries = ordered(load("filters"), CNNS)
    if not entries:
        return "(not measured yet)"
    lines = ["| backbone | degenerate share ↓ | variance entropy | orthogonality |", "| --- | --- | --- | --- |"]
    for entry in entries:
        values = {row["metric"]: row["value"] for row in entry["rows"]}
        lines.append(f"| {entry['label']} | {values['degenerate']:.4f} | {values['variance_entropy']:.3f} | "
                     f"{values['orthogonality']:.3f} |")
    return "\n".join(lines)


def forming_table() -> str:
    """Filter health logged by --filters-every 1 during each CNN run: epoch 0 (initial) to the last."""
    lines = []
    for label, name in CNNS.items():
        metrics = RUNS / name / "metrics.jsonl"
        if name.startswith("random-") or not metrics.exists():
            continue
        records = [r for r in map(json.loads, metrics.read_text().splitlines()) if "filters_entropy" in r]
        if not lines:
            epochs = [r["epoch"] for r in records]
            lines = ["| backbone | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
                     "| --- | " + " | ".join("---" for _ in epochs) + " |"]
        lines.append(f"| {label} | " + " | ".join(f"{r['filters_entropy']:.3f} / {r['filters_orthogonality']:.3f}"
                                                 for r in records) + " |")
    return "\n".join(lines) or "(not measured yet)"


def render() -> None:
    text = PAGE.read_text()
    tables = (("quality", quality_table()), ("attention", attention_table()), ("filters", filters_table()),
              ("forming", forming_table()))
    for name, table in tables:
        text = re.sub(rf"<!-- {name} -->.*?<!-- /{name} -->", f"<!-- {name} -->\n{table}\n<!-- /{name} -->", text,
                      flags=re.DOTALL)
    PAGE.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["quality", "attention", "filters", "knn"])
    parser.add_argument("--only", help="comma list of run names (e.g. cnn-simclr,random-tinycnn)")
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    if args.part:
        measure_part(args.part, args.only.split(",") if args.only else None)
    if args.render:
        render()


if __name__ == "__main__":
    main()
