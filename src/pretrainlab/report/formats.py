"""A `Comparison` as text: an aligned table, CSV, JSON or Markdown."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from pretrainlab.errors import PretrainlabError
from pretrainlab.report.comparison import Cell, Comparison

FORMATS = ("table", "csv", "json", "markdown")


def format_number(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "nan"
    magnitude = abs(value)
    if magnitude >= 1e4:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_cell(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    spread = f" ± {format_number(cell.std)}" if cell.std is not None else ""
    return f"{format_number(cell.mean)}{spread}"


def grid(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per protocol metric, then seconds per evaluation, z-score and rank."""
    header = ["protocol", "metric", *comparison.backbones]
    rows = []
    for column in comparison.columns:
        metric = column.metric if column.higher_is_better else f"{column.metric} (lower better)"
        rows.append([column.protocol, metric, *(format_cell(comparison.cells.get((b, column.protocol, column.metric)))
                                                for b in comparison.backbones)])
    for protocol in comparison.protocols:
        seconds = [comparison.protocol_seconds.get((b, protocol)) for b in comparison.backbones]
        rows.append([protocol, "seconds per evaluation", *("-" if s is None else f"{s:.1f}" for s in seconds)])
    rows.append(["all ranked", "mean z-score", *("-" if comparison.scores[b] is None else f"{comparison.scores[b]:+.2f}"
                                                 for b in comparison.backbones)])
    rows.append(["all ranked", "rank", *(str(comparison.ranks[b] or "-") for b in comparison.backbones)])
    return header, rows


def seeds_note(comparison: Comparison) -> str:
    counts = sorted({len(cell.seeds) for cell in comparison.cells.values()})
    ranked = ", ".join(comparison.ranked_protocols) or "none"
    return (f"data: {comparison.data}; mean ± sample std over {'/'.join(map(str, counts))} seed(s); "
            f"rank: mean per-protocol z-score over {ranked}")


def as_table(comparison: Comparison) -> str:
    header, rows = grid(comparison)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
             for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join([*lines, seeds_note(comparison)])


def as_markdown(comparison: Comparison) -> str:
    header, rows = grid(comparison)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([*lines, "", seeds_note(comparison)])


def records(comparison: Comparison) -> list[dict[str, Any]]:
    """One flat record per backbone and metric (the long form CSV and JSON use)."""
    out = []
    for backbone in comparison.backbones:
        for column in comparison.columns:
            cell = comparison.cells.get((backbone, column.protocol, column.metric))
            if cell is None:
                continue
            out.append({"data": comparison.data, "backbone": backbone, "protocol": column.protocol,
                        "metric": column.metric, "higher_is_better": column.higher_is_better, "mean": cell.mean,
                        "std": cell.std, "seeds": len(cell.seeds), "seconds": cell.seconds,
                        "protocol_seconds": comparison.protocol_seconds.get((backbone, column.protocol)),
                        "z_score": comparison.scores[backbone], "rank": comparison.ranks[backbone],
                        "fingerprint": comparison.fingerprints.get(backbone)})
    return out


def as_csv(comparison: Comparison) -> str:
    rows = records(comparison)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue().rstrip("\n")


def as_json(comparison: Comparison) -> dict[str, Any]:
    return {"data": comparison.data, "ranked_protocols": comparison.ranked_protocols,
            "backbones": [{"backbone": b, "rank": comparison.ranks[b], "z_score": comparison.scores[b],
                           "fingerprint": comparison.fingerprints.get(b)} for b in comparison.backbones],
            "results": records(comparison)}


def render(comparisons: list[Comparison], form: str) -> str:
    """All comparisons (one per dataset) in format `form`."""
    if form not in FORMATS:
        raise PretrainlabError(f"unknown format '{form}'; valid formats: {', '.join(FORMATS)}")
    if form == "json":
        return json.dumps([as_json(c) for c in comparisons], indent=2)
    if form == "csv":
        parts = [as_csv(c) for c in comparisons]
        return "\n".join([parts[0], *(part.split("\n", 1)[1] for part in parts[1:] if "\n" in part)])
    writer = as_table if form == "table" else as_markdown
    return "\n\n".join(writer(c) for c in comparisons)
