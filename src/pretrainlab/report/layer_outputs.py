"""What the explanation and attack layers leave in a run folder, read generically: their figures (RUN/explain/,
RUN/attack/), their summary records (protocols `explain.*` in evaluations.jsonl and the store), and the
filter-health monitor in metrics.jsonl. The report imports neither layer; a missing output names its command.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from pretrainlab.report.comparison import build_comparison
from pretrainlab.report.formats import format_cell
from pretrainlab.report.html import cell, embedded_png, hint, raw_table
from pretrainlab.report.levels import level_series
from pretrainlab.report.svg import multi_line_chart
from pretrainlab.store.rows import EvaluationRow

MAX_FIGURE_BYTES = 600_000  # one embedded figure; larger ones are listed by path
MAX_GALLERY_BYTES = 1_500_000  # all figures of one folder, so a page with every section stays under ~5 MB
MAX_FIGURES = 24


def figure_gallery(folder: Path) -> list[str]:
    """The PNG figures under `folder` (recursively, sorted), embedded while they fit the budget."""
    if not folder.is_dir():
        return []
    embedded, listed, used = [], [], 0
    for path in sorted(folder.rglob("*.png")):
        size = path.stat().st_size
        name = str(path.relative_to(folder))
        if size > MAX_FIGURE_BYTES or used + size > MAX_GALLERY_BYTES or len(embedded) >= MAX_FIGURES:
            listed.append(name)
            continue
        used += size
        embedded.append(f"<figure>{embedded_png(path, name)}<figcaption>{escape(name)}</figcaption></figure>")
    parts = [f'<div class="gallery">{"".join(embedded)}</div>'] if embedded else []
    if listed:
        parts.append(f'<p class="note">not embedded (page size budget): {escape(", ".join(listed))} in '
                     f"{escape(str(folder))}</p>")
    return parts


def explain_records(rows: list[EvaluationRow]) -> list[str]:
    """One table of every explanation summary (mean ± std over seeds), and curves over levels such as layers."""
    parts = []
    for data in sorted({row.data for row in rows}):
        comparison = build_comparison(rows, data)
        label = comparison.backbones[0]
        lines = [("<tr>" + cell(column.protocol.removeprefix("explain.")) + cell(column.metric)
                  + cell(format_cell(found), True, found.mean) + cell(str(len(found.seeds)), True, len(found.seeds))
                  + "</tr>")
                 for column in comparison.columns
                 if (found := comparison.cells.get((label, column.protocol, column.metric))) is not None]
        parts += [f"<h3>data: {escape(data)}</h3>", raw_table(["analysis", "metric", "value", "seeds"], lines)]
        for protocol in comparison.protocols:
            series = level_series(comparison.means(label, protocol))
            if series:
                parts.append(multi_line_chart(series, protocol, "level", "value"))
    return parts


def filter_health_section(monitor: list[dict[str, Any]]) -> list[str]:
    """The filters_* scalars the filter monitor logs per epoch, and its last per-layer values."""
    records = [record for record in monitor if any(key.startswith("filters_") for key in record)]
    if not records:
        return []
    keys = sorted({key for record in records for key, value in record.items()
                   if key.startswith("filters_") and isinstance(value, int | float)})
    series = {key.removeprefix("filters_"): ([r.get("epoch", r.get("step", 0)) for r in records if key in r],
                                              [r[key] for r in records if key in r]) for key in keys}
    parts = ["<h3>Filter health during training</h3>",
             multi_line_chart(series, "filter health (kernel-weighted mean over layers)", "epoch", "value")]
    layers = records[-1].get("filters_layers")
    if isinstance(layers, dict) and layers:
        lines = ["<tr>" + cell(str(name)) + "".join(cell(f"{v:.3g}", True, v) if isinstance(v, int | float)
                                                    else cell(str(v)) for v in (values if isinstance(values, list)
                                                                                else [values])) + "</tr>"
                 for name, values in layers.items()]
        parts.append(raw_table(["layer (last epoch)", "degenerate", "entropy", "orthogonality"], lines))
    return parts


def explain_section(run_dir: Path, rows: list[EvaluationRow], monitor: list[dict[str, Any]]) -> list[str]:
    parts = ["<h2 id=\"explain\">Explanations</h2>"]
    figures = figure_gallery(run_dir / "explain")
    filters = filter_health_section(monitor)
    if not rows and not figures:
        parts.append(hint(f"no explanations yet: run `pretrainlab explain {run_dir}` to fill this (CAM overlays, "
                          "attention distance per layer, filter health)."))
    parts += explain_records(rows) + figures
    if not filters:
        parts.append('<p class="note">no filter-health monitor in this run\'s metrics.jsonl.</p>')
    return parts + filters
