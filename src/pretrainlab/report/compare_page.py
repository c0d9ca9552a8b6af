"""The page of a comparison: per data spec, a table sortable by any column, z-score bars per protocol,
label-fraction curves of every backbone in one chart, and seconds per protocol; a filter picks the data spec."""

from __future__ import annotations

from html import escape
from pathlib import Path

from pretrainlab.atomic import atomic_path
from pretrainlab.report.comparison import Comparison, zscores_per_protocol
from pretrainlab.report.formats import format_cell, seeds_note
from pretrainlab.report.html import cell, page, raw_table, table
from pretrainlab.report.levels import by_scale, level_series, level_unit
from pretrainlab.report.svg import multi_line_chart

BAR_PIXELS = 240
Z_LIMIT = 2.5  # a z-score bar spans -Z_LIMIT..+Z_LIMIT (beyond that it is clipped; the number is exact)


def rank_bars(comparison: Comparison) -> str:
    """Mean z-scores as horizontal bars, shifted so the lowest is a short bar rather than none."""
    scored = [(b, comparison.scores[b]) for b in comparison.backbones if comparison.scores[b] is not None]
    if not scored:
        return ""
    low, high = min(s for _, s in scored), max(s for _, s in scored)
    rows = []
    for backbone, score in scored:
        width = 8 + (BAR_PIXELS - 8) * ((score - low) / (high - low) if high > low else 1.0)
        rows.append(f"<tr><td>{comparison.ranks[backbone]}</td><td>{escape(backbone)}</td>"
                    f"<td class=\"num\">{score:+.2f}</td><td><span class=\"bar\" style=\"width:{width:.0f}px\">"
                    "</span></td></tr>")
    return ("<table><thead><tr><th>rank</th><th>backbone</th><th>mean z</th><th></th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def results_table(comparison: Comparison) -> str:
    """One row per backbone: rank, mean z, then every protocol metric (sortable by its mean)."""
    header = ["backbone", "rank", "mean z"] + [f"{c.protocol} {c.metric}" + ("" if c.higher_is_better else " (lower)")
                                               for c in comparison.columns]
    rows = []
    for backbone in comparison.backbones:
        score, place = comparison.scores[backbone], comparison.ranks[backbone]
        cells = [cell(backbone), cell(str(place or "-"), True, place),
                 cell("-" if score is None else f"{score:+.2f}", True, score)]
        for column in comparison.columns:
            found = comparison.cells.get((backbone, column.protocol, column.metric))
            cells.append(cell(format_cell(found), True, None if found is None else found.mean))
        rows.append(f'<tr data-backbone="{escape(backbone)}">' + "".join(cells) + "</tr>")
    return raw_table(header, rows)


def protocol_zscores(comparison: Comparison) -> dict[tuple[str, str], float]:
    """(backbone, protocol) -> mean z-score of that protocol's metrics across the compared backbones."""
    return zscores_per_protocol({key: found.mean for key, found in comparison.cells.items()}, comparison.columns)


def z_bar(z: float) -> str:
    width = min(abs(z), Z_LIMIT) / Z_LIMIT * 50
    side = "pos" if z >= 0 else "neg"
    return f'<span class="zbar"><span class="{side}" style="width:{width:.1f}%"></span></span>{z:+.2f}'


def zscore_table(comparison: Comparison) -> str:
    """Bars per protocol: green right of the middle is better than the compared backbones' mean."""
    scores = protocol_zscores(comparison)
    rows = []
    for backbone in comparison.backbones:
        cells = [cell(backbone)]
        for protocol in comparison.protocols:
            z = scores.get((backbone, protocol))
            cells.append("<td>-</td>" if z is None else f'<td class="num nowrap" data-value="{z!r}">{z_bar(z)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return raw_table(["backbone", *comparison.protocols], rows)


def seconds_table(comparison: Comparison) -> str:
    rows = []
    for backbone in comparison.backbones:
        seconds = [comparison.protocol_seconds.get((backbone, protocol)) for protocol in comparison.protocols]
        rows.append("<tr>" + cell(backbone) + "".join(cell("-" if s is None else f"{s:.1f}", True, s)
                                                      for s in seconds) + "</tr>")
    return raw_table(["backbone", *comparison.protocols], rows)


def level_charts(comparison: Comparison) -> list[str]:
    """Per protocol and level scale (label fractions, noise rates, budgets): every backbone's curve in one chart."""
    charts = []
    for protocol in comparison.protocols:
        by_backbone = {backbone: comparison.means(backbone, protocol) for backbone in comparison.backbones}
        every = {m: v for means in by_backbone.values() for m, v in means.items()}
        for group in by_scale(every):
            series = {}
            for backbone, means in by_backbone.items():
                inside = {m: v for m, v in means.items() if m in group}
                series.update({f"{backbone} {name}": points for name, points in level_series(inside).items()})
            if series:
                charts.append(multi_line_chart(series, f"{protocol}: every backbone", level_unit(list(group)), "%"))
    return charts


def data_section(comparison: Comparison) -> str:
    fingerprints = [[b, comparison.fingerprints.get(b, "")] for b in comparison.backbones]
    parts = [f'<section class="data" data-spec="{escape(comparison.data)}">',
             f"<h2>data: {escape(comparison.data)}</h2>", rank_bars(comparison),
             "<h3>Results (click a header to sort)</h3>", f'<div class="scroll">{results_table(comparison)}</div>',
             f'<p class="note">{escape(seeds_note(comparison))}</p>',
             "<h3>z-score per protocol</h3>", zscore_table(comparison), *level_charts(comparison),
             "<h3>Seconds per evaluation (one seed)</h3>", seconds_table(comparison),
             table(["backbone", "weights fingerprint"], fingerprints, numeric_from=2), "</section>"]
    return "\n".join(parts)


def data_filter(comparisons: list[Comparison]) -> str:
    options = "".join(f'<option value="{escape(c.data)}">{escape(c.data)}</option>' for c in comparisons)
    return (f'<p><label>data spec: <select id="data-filter"><option value="">all ({len(comparisons)})</option>'
            f"{options}</select></label></p>")


def comparison_page(comparisons: list[Comparison]) -> str:
    return page("pretrainlab comparison", [data_filter(comparisons), *map(data_section, comparisons)])


def write_comparison_report(comparisons: list[Comparison], path: Path) -> Path:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(comparison_page(comparisons))
    return Path(path)
