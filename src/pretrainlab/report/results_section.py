"""The evaluation sections of a run's page: the gauntlet beside the random init of the same architecture,
curves over label fractions, noise rates and attack budgets, and corruption accuracy per severity.

Rows come from the run folder's evaluations.jsonl (the source of truth) and the store; the random-init
baseline is the store's `timm:BACKBONE` rows with random-init weights, as `pretrainlab gauntlet timm:NAME`
(or the demo) records them.
"""

from __future__ import annotations

import logging
import statistics
from html import escape
from pathlib import Path

from pretrainlab.report.comparison import Comparison, build_comparison, latest_rows
from pretrainlab.report.formats import format_cell
from pretrainlab.report.html import cell, hint, raw_table
from pretrainlab.report.levels import by_scale, level_series, level_unit
from pretrainlab.report.svg import multi_line_chart
from pretrainlab.store.database import ResultsStore
from pretrainlab.store.jsonlog import EVALUATIONS_LOG, read_evaluations
from pretrainlab.store.rows import EvaluationRow

log = logging.getLogger(__name__)

EXPLAIN_PREFIX = "explain."
ATTACK_PREFIXES = ("adversarial", "defended", "attack", "universal", "fooling", "feature_attack")
SEVERITIES = [1, 2, 3, 4, 5]


def is_explain(protocol: str) -> bool:
    return protocol.startswith(EXPLAIN_PREFIX)


def is_attack(protocol: str) -> bool:
    return protocol.startswith(ATTACK_PREFIXES)


def store_rows(store: Path | None) -> list[EvaluationRow]:
    if store is None or not Path(store).is_file():
        return []
    try:
        return ResultsStore(store).evaluations()
    except Exception as error:  # a page is still worth writing from the run folder alone
        log.warning("could not read the results store %s (%s); the page uses the run folder only", store, error)
        return []


def run_rows(run_dir: Path, stored: list[EvaluationRow]) -> list[EvaluationRow]:
    """The run's rows: its evaluations.jsonl, and store rows of the same folder the log lacks."""
    rows = read_evaluations(run_dir / EVALUATIONS_LOG)
    known, folder = {row.uid for row in rows}, str(run_dir.resolve())
    return rows + [row for row in stored if row.run_path == folder and row.uid not in known]


def baseline_rows(backbone: str | None, stored: list[EvaluationRow]) -> list[EvaluationRow]:
    """The random-init rows of the run's architecture (`timm:BACKBONE` with random-init weights)."""
    if not backbone:
        return []
    return [row for row in stored if row.backbone == f"timm:{backbone}" and row.fingerprint.startswith("random-init")]


def only_cell(comparison: Comparison | None, protocol: str, metric: str) -> tuple[str, float | None]:
    if comparison is None or not comparison.backbones:
        return "-", None
    found = comparison.cells.get((comparison.backbones[0], protocol, metric))
    return format_cell(found), None if found is None else found.mean


def gauntlet_table(ours: Comparison, random: Comparison | None) -> str:
    rows = []
    label = ours.backbones[0]
    for column in ours.columns:
        if is_explain(column.protocol):
            continue
        found = ours.cells.get((label, column.protocol, column.metric))
        if found is None:
            continue
        baseline, baseline_mean = only_cell(random, column.protocol, column.metric)
        difference = found.mean - baseline_mean if baseline_mean is not None else None
        sign = 1 if column.higher_is_better else -1
        seconds = ours.protocol_seconds.get((label, column.protocol))
        rows.append("<tr>" + cell(column.protocol) + cell(column.metric + ("" if column.higher_is_better else
                                                                           " (lower better)"))
                    + cell(format_cell(found), True, found.mean) + cell(str(len(found.seeds)), True, len(found.seeds))
                    + cell(baseline, True, baseline_mean)
                    + cell("-" if difference is None else f"{difference:+.2f}", True,
                           None if difference is None else sign * difference)
                    + cell("-" if seconds is None else f"{seconds:.1f}", True, seconds) + "</tr>")
    return raw_table(["protocol", "metric", "this run (mean ± std)", "seeds", "random init", "difference",
                      "seconds"], rows)


def level_charts(ours: Comparison, random: Comparison | None) -> list[str]:
    """One chart per protocol and level scale: this run's curves, and random init's beside."""
    charts = []
    label = ours.backbones[0]
    first = random.backbones[0] if random is not None and random.backbones else None
    for protocol in ours.protocols:
        means = ours.means(label, protocol)
        baseline = {} if first is None else random.means(first, protocol)
        for group in by_scale(means):
            series = level_series(group)
            if not series:
                continue
            inside = {m: v for m, v in baseline.items() if m in group}
            series.update({f"random init {name}": points for name, points in level_series(inside).items()})
            charts.append(multi_line_chart(series, f"{protocol}: accuracy by level", level_unit(list(group)), "%"))
    return charts


def corruption_chart(rows: list[EvaluationRow], data: str, title: str) -> str:
    """Top-1 per severity of each corruption, averaged over seeds (from the protocol's recorded settings)."""
    per_seed: dict[int, dict[str, list[float]]] = {}
    for row in rows:
        severities = row.settings.get("per_severity_top1") if row.protocol == "corruption" else None
        if isinstance(severities, dict) and row.data == data:
            per_seed[row.seed] = severities
    if not per_seed:
        return ""
    names = sorted({name for severities in per_seed.values() for name in severities})
    series = {}
    for name in names:
        runs = [severities[name] for severities in per_seed.values() if name in severities]
        series[name] = (SEVERITIES[: len(runs[0])], [statistics.fmean(values) for values in zip(*runs, strict=False)])
    return multi_line_chart(series, f"{title} (mean of {len(per_seed)} seed(s))", "severity", "top-1 %",
                            x_ticks_at=SEVERITIES)


def evaluations_section(run_dir: Path, backbone: str | None, rows: list[EvaluationRow],
                        stored: list[EvaluationRow]) -> list[str]:
    """`rows`: the run's own (`run_rows`); `stored`: the store's rows (the random-init baseline among them)."""
    ours_rows = [row for row in rows if not is_explain(row.protocol)]
    random_rows = baseline_rows(backbone, stored)
    parts = ["<h2 id=\"evaluations\">Evaluations</h2>"]
    gauntlet_rows = [row for row in ours_rows if not is_attack(row.protocol)]
    if not gauntlet_rows:
        parts.append(hint(f"none yet: run `pretrainlab gauntlet {run_dir} --data SPEC` to fill this."))
    for data in sorted({row.data for row in gauntlet_rows}):
        ours = build_comparison(gauntlet_rows, data)
        baseline_data = [row for row in random_rows if row.data == data]
        random = build_comparison(baseline_data, data) if baseline_data else None
        parts += [f"<h3>data: {escape(data)}</h3>", gauntlet_table(ours, random)]
        if random is None:
            parts.append(hint(f"no random-init baseline in the store for this data: run `pretrainlab gauntlet "
                              f"timm:{backbone} --data {data}` to add one."))
        charts = level_charts(ours, random)
        latest = [row for group in latest_rows(gauntlet_rows).values() for row in group]
        corruption = corruption_chart(latest, data, "corruption: top-1 by severity")
        parts += charts + ([corruption] if corruption else [])
    parts.append('<p class="note">mean ± sample std over seeds of the latest weights (by fingerprint), the newest '
                 "row per seed; difference = this run minus random init (sign flipped where lower is better).</p>")
    parts += attack_section(run_dir, [row for row in ours_rows if is_attack(row.protocol)], random_rows)
    return parts


def attack_section(run_dir: Path, rows: list[EvaluationRow], random_rows: list[EvaluationRow]) -> list[str]:
    from pretrainlab.report.layer_outputs import figure_gallery

    parts = ["<h2 id=\"attack\">Robustness to attacks</h2>"]
    figures = figure_gallery(run_dir / "attack")
    if not rows and not figures:
        return [*parts, hint(f"no attack results yet: run `pretrainlab attack {run_dir}` to fill this.")]
    for data in sorted({row.data for row in rows}):
        ours = build_comparison(rows, data)
        baseline = [row for row in random_rows if row.data == data and is_attack(row.protocol)]
        random = build_comparison(baseline, data) if baseline else None
        parts += [f"<h3>data: {escape(data)}</h3>", gauntlet_table(ours, random), *level_charts(ours, random)]
    return parts + figures
