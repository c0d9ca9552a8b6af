"""Metrics measured at a level (`top1@10%`, `top1@sym40`, `pgd_linf@8/255`) read back as curves.

Protocols name a measurement at a label fraction, a noise rate or an attack budget in the metric itself;
the report parses that name so any protocol of this form gets its curve without the report knowing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LEVEL = re.compile(r"^(?P<kind>[A-Za-z_]*?)(?P<number>\d+(?:\.\d+)?)(?:/(?P<denominator>\d+(?:\.\d+)?))?"
                   r"(?P<unit>%?)(?P<tail>\+[A-Za-z_]+)?$")
CLEAN = "clean"  # the unperturbed measurement: level 0 of every curve of its metric


@dataclass(frozen=True)
class Level:
    """`top1@sym40+elr` -> series "top1@sym+elr", value 40, unit "sym"."""

    series: str
    value: float
    unit: str


def parse_level(metric: str) -> Level | None:
    """The level a metric was measured at, or None when its suffix is not a number (`top1@gaussian_noise`)."""
    head, at, suffix = metric.partition("@")
    if not at:
        return None
    match = LEVEL.match(suffix)
    if match is None:
        return None
    value = float(match["number"])
    if match["denominator"]:
        value /= float(match["denominator"])
    kind, tail = match["kind"], match["tail"] or ""
    unit = kind or ("%" if match["unit"] else ("eps" if match["denominator"] else ""))
    series = f"{head}@{kind}{tail}" if (kind or tail) else head
    return Level(series, value, unit)


def level_curves(means: dict[str, float]) -> dict[str, list[tuple[float, float]]]:
    """One protocol's metric -> mean becomes series -> [(level, mean)] sorted by level; its `top1@clean` (the
    unperturbed measurement) starts every series at level 0. Only series of two or more points are kept."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for metric, mean in means.items():
        level = parse_level(metric)
        if level is not None:
            curves.setdefault(level.series, []).append((level.value, mean))
    clean = [mean for metric, mean in means.items() if metric.partition("@")[2] == CLEAN]
    if clean:
        for points in curves.values():
            points.append((0.0, clean[0]))
    return {series: sorted(points) for series, points in curves.items() if len(points) >= 2}


def level_series(means: dict[str, float]) -> dict[str, tuple[list[float], list[float]]]:
    """`level_curves` as series -> (levels, means), the form charts take."""
    return {series: ([x for x, _ in points], [y for _, y in points]) for series, points in level_curves(means).items()}


def level_unit(metrics: list[str]) -> str:
    units = {level.unit for level in map(parse_level, metrics) if level is not None}
    if units <= {"%"}:
        return "% of labels"
    if units <= {"eps"}:
        return "epsilon"
    named = sorted(unit for unit in units if unit)
    return "level (" + ", ".join(named) + ")" if named else "level"


def by_scale(means: dict[str, float]) -> list[dict[str, float]]:
    """One protocol's metrics split by the unit of their levels, so every chart has one x scale: an attack run at
    L-inf budgets (8/255 = 0.03) and at L2 norms (0.25 .. 2) would otherwise squash one set of curves at 0.
    Metrics without a level (`top1@clean`) go with every group; one group when all levels share a unit."""
    groups: dict[str, dict[str, float]] = {}
    plain = {}
    for metric, mean in means.items():
        level = parse_level(metric)
        if level is None:
            plain[metric] = mean
        else:
            groups.setdefault(level.unit, {})[metric] = mean
    return [{**plain, **group} for group in groups.values()] or [plain]
