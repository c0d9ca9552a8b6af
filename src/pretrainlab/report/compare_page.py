"""The page of a comparison: the table of `pretrainlab compare`, and the aggregate rank as bars."""

from __future__ import annotations

from html import escape
from pathlib import Path

from pretrainlab.atomic import atomic_path
from pretrainlab.report.comparison import Comparison
from pretrainlab.report.formats import grid, seeds_note
from pretrainlab.report.html import page, table

BAR_PIXELS = 240


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


def comparison_page(comparisons: list[Comparison]) -> str:
    body = []
    for comparison in comparisons:
        header, rows = grid(comparison)
        body += [f"<h2>{escape(comparison.data)}</h2>", rank_bars(comparison), table(header, rows, numeric_from=2),
                 f'<p class="note">{escape(seeds_note(comparison))}</p>']
        fingerprints = [[b, comparison.fingerprints.get(b, "")] for b in comparison.backbones]
        body.append(table(["backbone", "weights fingerprint"], fingerprints, numeric_from=2))
    return page("pretrainlab comparison", body)


def write_comparison_report(comparisons: list[Comparison], path: Path) -> Path:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(comparison_page(comparisons))
    return Path(path)
