"""Pieces of self-contained HTML pages: the page shell, tables, embedded images and data.

A page is one file: styles, script and data inline, nothing fetched (no server, no external scripts or fonts).
Every user string passes through `escape`; data for the script is JSON with `<`, `>` and `&` written as
\\u escapes, so no string in it can close the `<script>` element that holds it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import pretrainlab
from pretrainlab.report.script import SCRIPT

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-order="asc"]::after { content: " \\25B2"; }
table.sortable th[data-order="desc"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 12px; }
.note { color: #666; font-size: 13px; }
.hint { background: #fff8e1; border-left: 3px solid #f0b400; padding: 4px 8px; font-size: 13px; }
.bar { display: inline-block; height: 10px; background: #1f77b4; vertical-align: middle; }
.scroll { overflow-x: auto; max-width: 100%; }
td.nowrap { white-space: nowrap; }
.zbar { display: inline-block; position: relative; width: 120px; height: 10px; background: #f2f2f2;
        vertical-align: middle; margin-right: 6px; }
.zbar span { position: absolute; top: 0; height: 10px; }
.zbar .pos { background: #2ca02c; left: 50%; }
.zbar .neg { background: #d62728; right: 50%; }
figure.chart { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figure.chart circle.mark.hot { stroke: #000; stroke-width: 2; }
.readout { font-size: 12px; color: #444; min-height: 1.2em; }
.gallery figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; max-width: 520px; }
.gallery figcaption { font-size: 12px; color: #444; }
#network-view button { margin: 2px; padding: 4px; border: 1px solid #bbb; background: #fafafa; cursor: pointer; }
#network-view button.active { border-color: #1f77b4; background: #e6f0fa; }
#network-view .net-images button span { display: block; font-size: 11px; }
#network-view img { image-rendering: pixelated; }
#network-view img.fmap { margin: 2px; border: 1px solid #ddd; }
.net-stats { font-size: 13px; min-height: 1.3em; }
nav a { margin-right: 1em; }
"""


def page(title: str, body: Sequence[str]) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>\n" + "\n".join(body)
            + f"\n<p class=\"note\">written by pretrainlab {pretrainlab.__version__} at {stamp}</p>"
            + f"<script>{SCRIPT}</script></body></html>\n")


def cell(text: str, numeric: bool = False, value: float | None = None) -> str:
    """A table cell of escaped text; `value` (when given) is what sorting uses."""
    attributes = ' class="num"' if numeric else ""
    if value is not None:
        attributes += f' data-value="{value!r}"'
    return f"<td{attributes}>{escape(text)}</td>"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1, sortable: bool = False) -> str:
    """An HTML table; cells are escaped text, cells from column `numeric_from` on are right-aligned."""
    return raw_table(header, ["<tr>" + "".join(cell(text, i >= numeric_from) for i, text in enumerate(row)) + "</tr>"
                              for row in rows], sortable)


def raw_table(header: Sequence[str], rows: Sequence[str], sortable: bool = True) -> str:
    """A table from already-built `<tr>` rows (cells made with `cell`)."""
    head = "".join(f"<th>{escape(text)}</th>" for text in header)
    kind = ' class="sortable"' if sortable else ""
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def hint(text: str) -> str:
    """A missing section: what fills it (`text` is escaped; commands in it are shown as they are)."""
    return f'<p class="hint">{escape(text)}</p>'


def png_data(data: bytes) -> str:
    return base64.b64encode(data).decode()


def embedded_png(path: Path, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{png_data(Path(path).read_bytes())}" ' \
           'style="max-width:100%">'


def json_script(element_id: str, data: Any) -> str:
    """`data` as JSON inside a non-executed script element the page's script reads."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{escape(element_id)}">{text}</script>'
