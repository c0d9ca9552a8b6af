"""The page of one run: what was trained and how, its curves, evaluations against random init, explanations,
attacks, reconstructions and the network view; every section missing its data says which command fills it."""

from __future__ import annotations

from html import escape
from pathlib import Path

import yaml

from pretrainlab.atomic import atomic_path
from pretrainlab.errors import PretrainlabError
from pretrainlab.report.html import embedded_png, hint, page
from pretrainlab.report.layer_outputs import explain_section
from pretrainlab.report.network_view import network_section
from pretrainlab.report.results_section import evaluations_section, is_explain, run_rows, store_rows
from pretrainlab.report.training_section import curves_section, facts_table, split_metrics
from pretrainlab.store.database import DEFAULT_STORE
from pretrainlab.store.runs import read_config, read_metrics

REPORT_NAME = "report.html"
RECONSTRUCTIONS = "reconstructions.png"
MAX_RECONSTRUCTION_BYTES = 1_000_000  # with the two galleries' budgets, a page stays under ~5 MB
SECTIONS = (("training", "training"), ("evaluations", "evaluations"), ("attack", "attacks"),
            ("explain", "explanations"), ("network", "network view"), ("reconstructions", "reconstructions"),
            ("configuration", "configuration"))


def run_page(run_dir: Path, store: Path | None = DEFAULT_STORE) -> str:
    """The HTML of `run_dir`'s page, from its files and (when it exists) the results store."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PretrainlabError(f"run folder not found: {run_dir}")
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)
    training, monitor = split_metrics(metrics)
    stored = store_rows(store)
    rows = run_rows(run_dir, stored)  # evaluations.jsonl, and the store's rows of this folder it lacks
    nav = "<nav>" + "".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in SECTIONS) + "</nav>"
    body = [nav, facts_table(run_dir, config, training), *curves_section(metrics),
            *evaluations_section(run_dir, config.get("backbone"), rows, stored),
            *explain_section(run_dir, [row for row in rows if is_explain(row.protocol)], monitor),
            *network_section(run_dir), "<h2 id=\"reconstructions\">Reconstructions</h2>"]
    reconstructions = run_dir / RECONSTRUCTIONS
    if reconstructions.is_file() and reconstructions.stat().st_size <= MAX_RECONSTRUCTION_BYTES:
        body.append(embedded_png(reconstructions, "reconstructions"))
    elif reconstructions.is_file():
        body.append(f'<p class="note">{escape(str(reconstructions))}: too large to embed (page size budget).</p>')
    else:
        body.append('<p class="note">none: only methods that reconstruct pixels (mae, simmim, ...) write them.</p>')
    body += ["<h2 id=\"configuration\">Configuration</h2>",
             f"<pre>{escape(yaml.safe_dump(config, sort_keys=False))}</pre>" if config
             else hint("no config.yaml in this folder.")]
    return page(f"pretrainlab run {run_dir.name}", body)


def write_run_report(run_dir: Path, store: Path | None = DEFAULT_STORE) -> Path:
    """Writes (or refreshes) `run_dir/report.html` atomically; returns its path."""
    html = run_page(run_dir, store)
    path = Path(run_dir) / REPORT_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(html)
    return path


def refresh_run_report(spec: str | Path, store: Path | None = DEFAULT_STORE) -> Path | None:
    """Refreshes the run page when `spec` names a run folder (`explain` and `attack` add sections to it);
    None for `timm:NAME` targets, which have no page."""
    run_dir = Path(spec)
    if not (run_dir / "config.yaml").is_file():
        return None
    return write_run_report(run_dir, store)
