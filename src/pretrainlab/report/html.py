"""Pieces of self-contained HTML pages: the page shell, tables, embedded images."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path

import pretrainlab

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 12px; }
.note { color: #666; font-size: 13px; }
.bar { display: inline-block; height: 10px; background: #1f77b4; vertical-align: middle; }
"""


def page(title: str, body: Sequence[str]) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>\n" + "\n".join(body)
            + f"\n<p class=\"note\">written by pretrainlab {pretrainlab.__version__} at {stamp}</p></body></html>\n")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """An HTML table; cells are escaped text, cells from column `numeric_from` on are right-aligned."""
    head = "".join(f"<th>{escape(text)}</th>" for text in header)
    numeric = ' class="num"'
    body = "".join(
        "<tr>" + "".join(f"<td{numeric if i >= numeric_from else ''}>{escape(text)}</td>"
                         for i, text in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def embedded_png(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'
