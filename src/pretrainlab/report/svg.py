"""Inline SVG line charts: a report page needs no plotting library and no external file.

Every drawn point is a `circle.mark` carrying a `<title>` (the browser's own tooltip) and `data-label`, which
the page's script shows in the chart's readout on hover; the chart's `data-marks` says how many it drew, so a
test can count them against the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 520, 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 28, 40
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
MAX_MARKS = 300  # points per series drawn as marks; longer curves are thinned evenly (the page stays small)

Series = tuple[Sequence[float], Sequence[float]]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [math.floor(low / step) * step]
    while ticks[-1] < high - step * 1e-9:  # the last tick is at or above `high`, so every point is inside
        ticks.append(round(ticks[0] + len(ticks) * step, 12))
    return ticks


def finite_points(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]


def thin(points: list[tuple[float, float]], limit: int = MAX_MARKS) -> list[tuple[float, float]]:
    """At most `limit` points, evenly spaced in index, always keeping the first and the last."""
    if len(points) <= limit:
        return points
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def format_value(value: float) -> str:
    return f"{value:.4g}"


def line_chart(xs: Sequence[float], ys: Sequence[float], title: str, x_label: str, y_label: str) -> str:
    """An SVG element plotting ys against xs (non-finite points are dropped)."""
    return multi_line_chart({y_label: (xs, ys)}, title, x_label, y_label)


def multi_line_chart(series: Mapping[str, Series], title: str, x_label: str, y_label: str,
                     x_ticks_at: Sequence[float] | None = None) -> str:
    """An SVG chart with one line per named series (and a legend when there are several).

    Args:
        series: name -> (xs, ys); non-finite points are dropped, long series thinned to MAX_MARKS points.
        x_ticks_at: fixed x tick positions (e.g. severities 1..5) instead of round numbers.
    """
    drawn = {name: thin(finite_points(*values)) for name, values in series.items()}
    drawn = {name: points for name, points in drawn.items() if points}
    if not drawn:
        return f'<p class="note">{escape(title)}: no data</p>'
    every = [point for points in drawn.values() for point in points]
    x_ticks = list(x_ticks_at) if x_ticks_at else nice_ticks(min(p[0] for p in every), max(p[0] for p in every))
    y_ticks = nice_ticks(min(p[1] for p in every), max(p[1] for p in every))
    x_low, x_high, y_low, y_high = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def sx(x: float) -> float:
        return MARGIN_LEFT + (x - x_low) / ((x_high - x_low) or 1.0) * plot_width

    def sy(y: float) -> float:
        return MARGIN_TOP + (1 - (y - y_low) / ((y_high - y_low) or 1.0)) * plot_height

    legend_height = 16 * len(drawn) if len(drawn) > 1 else 0
    height = HEIGHT + legend_height
    parts = [f'<figure class="chart" data-marks="{len(every)}"><svg xmlns="http://www.w3.org/2000/svg" '
             f'width="{WIDTH}" height="{height}" role="img" aria-label="{escape(title)}" font-family="sans-serif" '
             f'font-size="11"><text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>']
    for tick in x_ticks:
        parts.append(f'<line x1="{sx(tick):.1f}" x2="{sx(tick):.1f}" y1="{MARGIN_TOP}" '
                     f'y2="{HEIGHT - MARGIN_BOTTOM}" stroke="#eee"/>'
                     f'<text x="{sx(tick):.1f}" y="{HEIGHT - MARGIN_BOTTOM + 14}" text-anchor="middle">{tick:g}</text>')
    for tick in y_ticks:
        parts.append(f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" '
                     f'stroke="#eee"/><text x="{MARGIN_LEFT - 6}" y="{sy(tick) + 4:.1f}" '
                     f'text-anchor="end">{tick:g}</text>')
    for index, (name, points) in enumerate(drawn.items()):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(points))
        parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        radius = 2.5 if len(points) <= 60 else 1.2  # markers help read sparse curves such as one kNN point per epoch
        for x, y in points:
            label = escape(f"{name}: {x_label} {format_value(x)}, {y_label} {format_value(y)}")
            parts.append(f'<circle class="mark" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{radius}" fill="{colour}" '
                         f'data-label="{label}"><title>{label}</title></circle>')
        if legend_height:
            y = HEIGHT + 16 * index + 4
            parts.append(f'<rect x="{MARGIN_LEFT}" y="{y}" width="12" height="8" fill="{colour}"/>'
                         f'<text x="{MARGIN_LEFT + 18}" y="{y + 8}">{escape(name)}</text>')
    parts.append(f'<text x="{MARGIN_LEFT + plot_width / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    parts.append(f'<text x="14" y="{MARGIN_TOP + plot_height / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {MARGIN_TOP + plot_height / 2})">{escape(y_label)}</text>')
    parts.append('</svg><figcaption class="readout">hover a point for its value</figcaption></figure>')
    return "".join(parts)
