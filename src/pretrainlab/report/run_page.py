"""The page of one run: its configuration, loss and online kNN curves, evaluations, reconstructions."""

from __future__ import annotations

from html import escape
from pathlib import Path

import yaml

from pretrainlab.atomic import atomic_path
from pretrainlab.errors import PretrainlabError
from pretrainlab.report.comparison import build_comparison
from pretrainlab.report.formats import format_cell
from pretrainlab.report.html import embedded_png, page, table
from pretrainlab.report.svg import line_chart
from pretrainlab.store.jsonlog import EVALUATIONS_LOG, read_evaluations
from pretrainlab.store.runs import read_config, read_metrics

REPORT_NAME = "report.html"
RECONSTRUCTIONS = "reconstructions.png"


def curves_section(run_dir: Path) -> list[str]:
    metrics = read_metrics(run_dir)
    losses = [record for record in metrics if "loss" in record and "step" in record]
    knn = [record for record in metrics if "knn_top1" in record]
    parts = ["<h2>Training</h2>"]
    if not metrics:
        return [*parts, "<p>no metrics.jsonl in this folder.</p>"]
    parts.append(line_chart([r["step"] for r in losses], [r["loss"] for r in losses], "pre-training loss",
                            "step", "loss"))
    if knn:
        parts.append(line_chart([r.get("epoch", r.get("step", 0)) for r in knn], [r["knn_top1"] for r in knn],
                                f"online kNN top-1 (k={knn[-1].get('knn_k', '?')})", "epoch", "top-1 %"))
    else:
        parts.append('<p class="note">no online kNN monitor in this run (train with --knn-every N).</p>')
    return parts


def evaluations_section(run_dir: Path) -> list[str]:
    rows = read_evaluations(run_dir / EVALUATIONS_LOG)
    parts = ["<h2>Evaluations</h2>"]
    if not rows:
        return [*parts, f"<p>none yet: run <code>pretrainlab gauntlet {escape(str(run_dir))} --data SPEC</code>.</p>"]
    lines = []
    for data in sorted({row.data for row in rows}):
        comparison = build_comparison(rows, data)
        for backbone in comparison.backbones:
            for column in comparison.columns:
                cell = comparison.cells.get((backbone, column.protocol, column.metric))
                if cell is not None:
                    direction = "" if column.higher_is_better else " (lower better)"
                    seconds = comparison.protocol_seconds[(backbone, column.protocol)]
                    lines.append([data, column.protocol, column.metric + direction, format_cell(cell),
                                  str(len(cell.seeds)), f"{seconds:.1f}"])
    parts.append(table(["data", "protocol", "metric", "mean ± std", "seeds", "seconds"], lines, numeric_from=3))
    parts.append('<p class="note">the latest weights only (by fingerprint); the newest row per seed.</p>')
    return parts


def run_page(run_dir: Path) -> str:
    """The HTML of `run_dir`'s page, from its files alone."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PretrainlabError(f"run folder not found: {run_dir}")
    config = read_config(run_dir)
    resolved = config.get("resolved", {})
    facts = [["method", str(config.get("method", "?"))], ["backbone", str(config.get("backbone", "?"))],
             ["data", str(config.get("data", "?"))], ["image size", str(resolved.get("img_size", "?"))],
             ["split", str(resolved.get("split", "?"))], ["folder", str(run_dir.resolve())]]
    body = [table(["", ""], facts, numeric_from=2), *curves_section(run_dir), *evaluations_section(run_dir)]
    if (run_dir / RECONSTRUCTIONS).is_file():
        body += ["<h2>Reconstructions</h2>", embedded_png(run_dir / RECONSTRUCTIONS, "reconstructions")]
    body += ["<h2>Configuration</h2>",
             f"<pre>{escape(yaml.safe_dump(config, sort_keys=False)) if config else 'no config.yaml'}</pre>"]
    return page(f"pretrainlab run {run_dir.name}", body)


def write_run_report(run_dir: Path) -> Path:
    """Writes (or refreshes) `run_dir/report.html` atomically; returns its path."""
    html = run_page(run_dir)
    path = Path(run_dir) / REPORT_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(html)
    return path
