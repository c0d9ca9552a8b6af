"""Inline SVG line charts: a report page needs no plotting library and no external file."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 560, 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 28, 40


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


def line_chart(xs: Sequence[float], ys: Sequence[float], title: str, x_label: str, y_label: str) -> str:
    """An SVG element plotting ys against xs (non-finite points are dropped)."""
    points = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y)]
    if not points:
        return f"<p>{escape(title)}: no data</p>"
    x_ticks = nice_ticks(min(p[0] for p in points), max(p[0] for p in points))
    y_ticks = nice_ticks(min(p[1] for p in points), max(p[1] for p in points))
    x_low, x_high, y_low, y_high = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def sx(x: float) -> float:
        return MARGIN_LEFT + (x - x_low) / ((x_high - x_low) or 1.0) * plot_width

    def sy(y: float) -> float:
        return MARGIN_TOP + (1 - (y - y_low) / ((y_high - y_low) or 1.0)) * plot_height

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
             f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>']
    for tick in x_ticks:
        parts.append(f'<line x1="{sx(tick):.1f}" x2="{sx(tick):.1f}" y1="{MARGIN_TOP}" '
                     f'y2="{HEIGHT - MARGIN_BOTTOM}" stroke="#eee"/>'
                     f'<text x="{sx(tick):.1f}" y="{HEIGHT - MARGIN_BOTTOM + 14}" text-anchor="middle">{tick:g}</text>')
    for tick in y_ticks:
        parts.append(f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" '
                     f'stroke="#eee"/><text x="{MARGIN_LEFT - 6}" y="{sy(tick) + 4:.1f}" '
                     f'text-anchor="end">{tick:g}</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(points))
    parts.append(f'<path d="{path}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    if len(points) <= 60:  # markers help read sparse curves such as one kNN point per epoch
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="#1f77b4"/>' for x, y in points]
    parts.append(f'<text x="{MARGIN_LEFT + plot_width / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    parts.append(f'<text x="14" y="{MARGIN_TOP + plot_height / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {MARGIN_TOP + plot_height / 2})">{escape(y_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
