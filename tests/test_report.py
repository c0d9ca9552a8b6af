"""HTML reports: self-contained pages from run folders and the store; the SVG charts they draw."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pretrainlab.cli import main
from pretrainlab.report import build_comparison, comparison_page, write_run_report
from pretrainlab.report.svg import line_chart, nice_ticks
from pretrainlab.store import EVALUATIONS_LOG, EvaluationRow, append_evaluations


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    ticks = nice_ticks(0.13, 9.7)
    assert ticks[0] <= 0.13 and ticks[-1] >= 9.7
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert steps == {5.0}  # (9.7 - 0.13) / 4 = 2.39 rounds up to the next of 1, 2, 5 x 10^n
    assert nice_ticks(5.0, 5.0)[0] <= 5.0  # a flat curve still gets an axis


def test_line_chart_draws_every_finite_point() -> None:
    svg = line_chart([0, 1, 2, 3], [4.0, 3.0, float("nan"), 1.0], "loss <curve>", "step", "loss")
    assert svg.startswith('<figure class="chart" data-marks="3">') and "</svg>" in svg
    assert svg.count('<circle class="mark"') == 3 and "<title>loss: step 3, loss 1</title>" in svg
    path = re.search(r'<path d="([^"]+)"', svg).group(1)
    assert path.count("M") == 1 and path.count("L") == 2  # three finite points, NaN dropped
    assert "loss &lt;curve&gt;" in svg  # titles are escaped
    assert "no data" in line_chart([], [], "empty", "x", "y")


def make_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    config = {"method": "mae", "backbone": "vit_nano_patch4", "data": "builtin",
              "resolved": {"img_size": 32, "split": "given"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = [{"step": s, "loss": 2.0 / s} for s in range(1, 21)]
    metrics += [{"step": 10, "epoch": 1, "knn_top1": 55.0, "knn_k": 20},
                {"step": 20, "epoch": 2, "knn_top1": 61.5, "knn_k": 20}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    Image.new("RGB", (6, 4), (200, 10, 10)).save(folder / "reconstructions.png")
    rows = [EvaluationRow(str(folder), "sha256:1", "builtin", "knn", "top1", value, seed, 2.0,
                          run_path=str(folder.resolve()), created=seed)
            for seed, value in enumerate([80.0, 82.0, 84.0])]
    append_evaluations(folder / EVALUATIONS_LOG, rows)
    return folder


def test_run_page_is_self_contained_and_shows_everything(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs" / "mae-small")
    page = write_run_report(run).read_text()
    assert page.count("<svg") == 2 and "online kNN top-1 (k=20)" in page  # loss and kNN (no lr logged)
    assert "82.00 ± 2.00" in page  # mean and sample std of 80, 82, 84
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == (run / "reconstructions.png").read_bytes()
    assert "vit_nano_patch4" in page and "mae" in page
    assert not re.search(r'(src|href)="(http|/|\.\./)', page)  # nothing fetched
    assert not re.search(r"<script[^>]*\bsrc=|@import|url\(", page) and page.count("<script>") == 1


def test_run_page_without_metrics_or_evaluations(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    page = write_run_report(run).read_text()
    assert "no metrics.jsonl" in page and "none yet" in page
    assert "pretrainlab explain" in page and "pretrainlab attack" in page and "--network" in page


def test_comparison_page_lists_ranks_and_values() -> None:
    rows = [EvaluationRow("good", "f", "builtin", "knn", "top1", 90.0, 0, 1.0),
            EvaluationRow("bad", "g", "builtin", "knn", "top1", 20.0, 0, 1.0)]
    page = comparison_page([build_comparison(rows, "builtin")])
    assert page.index("good") < page.index("bad")
    assert "+1.00" in page and "-1.00" in page and "90.00" in page


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "runs" / "r")
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
