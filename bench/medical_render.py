"""docs/medical.md's tables from bench/results/medical/NAME-seedS.json (written by bench/medical_study.py)."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

START, END = "<!-- medical-table -->", "<!-- /medical-table -->"
CONTRASTED = ("spark", "simclr", "mocov2")  # comparison 2: the masked CNN vs the contrastive ones


def load_rows(results: Path) -> dict[str, dict[int, dict]]:
    rows: dict[str, dict[int, dict]] = {}
    for path in sorted(results.glob("*-seed*.json")):
        match = re.fullmatch(r"(.+)-seed(\d+)", path.stem)
        if match:
            rows.setdefault(match.group(1), {})[int(match.group(2))] = json.loads(path.read_text())
    return rows


def cell(values: list[float]) -> str:
    """"mean (a, b)"; one value alone when there is one seed."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ({', '.join(f'{value:.1f}' for value in values)})"


def mean_of(seeds: dict[int, dict], part: str, metric: str) -> float | None:
    values = [row[part][metric] for row in seeds.values() if metric in row[part]]
    return statistics.fmean(values) if values else None


def table(rows: dict[str, dict[int, dict]], fractions: list[float]) -> list[str]:
    labels = [f"{fraction * 100:g}%" for fraction in fractions]
    lines = ["| row | backbone | seeds | " + " | ".join(f"fine-tune mAP @{label}" for label in labels)
             + " | frozen probe mAP (100%) |", "| --- | --- | --- |" + " --- |" * (len(labels) + 1)]
    for name, seeds in sorted(rows.items(), key=lambda item: -(mean_of(item[1], "finetune", "mAP@100%") or 0)):
        first = next(iter(seeds.values()))
        values = [cell([seeds[s]["finetune"][f"mAP@{label}"] for s in sorted(seeds)]) for label in labels]
        probe = cell([seeds[s]["probe"]["mAP"] for s in sorted(seeds)])
        lines.append(f"| {name} | {first['backbone']} | {', '.join(map(str, sorted(seeds)))} | "
                     + " | ".join(values) + f" | {probe} |")
    return lines


def winners(rows: dict[str, dict[int, dict]], fractions: list[float]) -> list[str]:
    """Which of SparK / SimCLR / MoCo v2 has the best mean fine-tuned mAP at each fraction."""
    present = [name for name in CONTRASTED if name in rows]
    if len(present) < 2:
        return []
    parts = []
    for fraction in fractions:
        label = f"{fraction * 100:g}%"
        means = {name: mean_of(rows[name], "finetune", f"mAP@{label}") for name in present}
        ranked = sorted(means, key=lambda name: -means[name])
        parts.append(f"{label}: {' > '.join(f'{name} {means[name]:.1f}' for name in ranked)}")
    return ["", "Order of the CNN pre-trainings by mean fine-tuned mAP, per label fraction: " + "; ".join(parts) + "."]


def render(results: Path, page: Path, fractions: list[float]) -> None:
    rows = load_rows(results)
    lines = table(rows, fractions) + winners(rows, fractions)
    text = page.read_text() if page.exists() else f"# Medical-style study\n\n{START}\n{END}\n"
    start, end = text.index(START), text.index(END)
    page.write_text(text[: start + len(START)] + "\n" + "\n".join(lines) + "\n" + text[end:])
