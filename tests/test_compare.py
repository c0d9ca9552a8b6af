"""Comparisons: mean ± std over seeds, z-score ranks checked by hand, formats, backbone selection, CLI errors."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pretrainlab.cli import main
from pretrainlab.errors import PretrainlabError
from pretrainlab.report import aggregate_scores, build_comparison, compare_store, rank, render, zscores
from pretrainlab.report.comparison import Column, select_rows
from pretrainlab.store import EvaluationRow, ResultsStore

# backbone -> (protocol, metric, higher_is_better) -> value; the aggregate below is worked out by hand.
TABLE = {
    "A": {("knn", "top1", True): 90.0, ("retrieval", "recall@1", True): 50.0, ("retrieval", "map", True): 10.0,
          ("noise", "error", False): 5.0},
    "B": {("knn", "top1", True): 80.0, ("retrieval", "recall@1", True): 60.0, ("retrieval", "map", True): 10.0,
          ("noise", "error", False): 10.0},
    "C": {("knn", "top1", True): 70.0, ("retrieval", "recall@1", True): 70.0, ("retrieval", "map", True): 40.0,
          ("noise", "error", False): 30.0},
}


def test_zscores_match_a_hand_computation() -> None:
    z = zscores({"a": 1.0, "b": 2.0, "c": 3.0})
    # mean 2, population std sqrt(2/3)
    assert z == pytest.approx({"a": -1 / math.sqrt(2 / 3), "b": 0.0, "c": 1 / math.sqrt(2 / 3)})
    assert zscores({"a": 1.0, "b": 2.0, "c": 3.0}, higher_is_better=False)["a"] == pytest.approx(1.224744871)
    assert zscores({"a": 4.0, "b": 4.0}) == {"a": 0.0, "b": 0.0}
    assert zscores({"only": 3.0}) == {"only": 0.0}


def test_aggregate_rank_averages_metrics_within_a_protocol_then_protocols() -> None:
    means = {(b, p, m): v for b, values in TABLE.items() for (p, m, _), v in values.items()}
    columns = [Column(p, m, h) for (p, m, h) in TABLE["A"]]
    scores = aggregate_scores(means, columns, ["knn", "retrieval", "noise"])
    # By hand: knn z = (+1.2247, 0, -1.2247); retrieval = mean of recall@1 (-1.2247, 0, +1.2247) and
    # map (-0.7071, -0.7071, +1.4142); noise error, lower better, negated: (+0.9258, +0.4629, -1.3887).
    assert scores["A"] == pytest.approx((1.224745 + (-1.224745 - 0.707107) / 2 + 0.925820) / 3, abs=1e-5)
    assert scores["B"] == pytest.approx((0.0 + (0.0 - 0.707107) / 2 + 0.462910) / 3, abs=1e-5)
    assert scores["C"] == pytest.approx((-1.224745 + (1.224745 + 1.414214) / 2 - 1.388730) / 3, abs=1e-5)
    assert rank(scores) == {"A": 1, "B": 2, "C": 3}
    # Averaging all four metrics flat would put C before B: the per-protocol step matters.
    flat = {b: np.mean([zscores({k: TABLE[k][col] for k in TABLE}, col[2])[b] for col in TABLE["A"]]) for b in TABLE}
    assert flat["C"] > flat["B"]


def test_rank_shares_ties_and_skips_backbones_without_scores() -> None:
    assert rank({"a": 1.0, "b": 1.0, "c": -2.0, "d": None}) == {"a": 1, "b": 1, "c": 3, "d": None}


def row(backbone: str, protocol: str, metric: str, value: float, seed: int, created: float, seconds: float = 1.0,
        fingerprint: str = "f1", higher_is_better: bool = True, data: str = "builtin") -> EvaluationRow:
    return EvaluationRow(backbone, fingerprint, data, protocol, metric, value, seed, seconds, higher_is_better,
                         created=created)


def stored_rows() -> list[EvaluationRow]:
    rows = [row("run", "knn", "top1", v, s, 10 + s) for s, v in enumerate([91.0, 92.5, 90.1])]
    rows += [row("run", "knn", "top1", 10.0, 0, 1, fingerprint="old-weights")]  # older weights: ignored
    rows += [row("run", "linear", "top1", 50.0, 0, 11), row("run", "linear", "top1", 95.0, 0, 20)]  # newest wins
    rows += [row("run", "retrieval", m, v, s, 12 + s, seconds=4.0 + 2 * s)
             for s in range(2) for m, v in (("recall@1", 60.0 + s), ("map", 30.0 + s))]
    rows += [row("run", "speed", "ms", 5.0, 0, 13, higher_is_better=False)]
    rows += [row("timm:tinycnn", "knn", "top1", v, s, 30 + s) for s, v in enumerate([60.0, 60.0, 60.0])]
    rows += [row("timm:tinycnn", "linear", "top1", 70.0, 0, 31), row("timm:tinycnn", "speed", "ms", 1.0, 0, 32,
                                                                     higher_is_better=False)]
    rows += [row("timm:tinycnn", "knn", "top1", 1.0, 0, 40, data="other")]
    return rows


def test_comparison_means_stds_seconds_and_rank() -> None:
    comparison = build_comparison(stored_rows(), "builtin")
    knn = comparison.cells[("run", "knn", "top1")]
    assert knn.mean == pytest.approx(np.mean([91.0, 92.5, 90.1]))
    assert knn.std == pytest.approx(np.std([91.0, 92.5, 90.1], ddof=1))
    assert knn.seeds == [0, 1, 2]
    assert comparison.cells[("run", "linear", "top1")].mean == 95.0
    assert comparison.cells[("run", "linear", "top1")].std is None
    assert comparison.cells[("timm:tinycnn", "knn", "top1")].std == 0.0
    # retrieval's two metrics come from one call per seed: 4 s and 6 s -> 5 s per evaluation
    assert comparison.protocol_seconds[("run", "retrieval")] == pytest.approx(5.0)
    assert comparison.ranked_protocols == ["knn", "linear", "retrieval"]  # speed is a cost, not ranked
    assert comparison.backbones == ["run", "timm:tinycnn"] and comparison.ranks == {"run": 1, "timm:tinycnn": 2}
    # two backbones: every shared metric gives z = +1 / -1; retrieval only has one backbone (z = 0)
    assert comparison.scores["run"] == pytest.approx((1 + 1 + 0) / 3)
    with_speed = build_comparison(stored_rows(), "builtin", rank_exclude=())
    assert with_speed.scores["run"] == pytest.approx((1 + 1 + 0 - 1) / 4)


def test_formats_carry_the_same_numbers() -> None:
    comparison = build_comparison(stored_rows(), "builtin")
    records = list(csv.DictReader(io.StringIO(render([comparison], "csv"))))
    assert len(records) == sum(1 for key in comparison.cells)
    knn = next(r for r in records if r["backbone"] == "run" and r["protocol"] == "knn")
    assert float(knn["mean"]) == pytest.approx(np.mean([91.0, 92.5, 90.1])) and knn["rank"] == "1"
    parsed = json.loads(render([comparison], "json"))
    assert parsed[0]["backbones"][0] == {"backbone": "run", "rank": 1, "z_score": pytest.approx(2 / 3),
                                         "fingerprint": "f1"}
    table = render([comparison], "table")
    assert "91.20 ± 1.21" in table and "ms (lower better)" in table and "seconds per evaluation" in table
    markdown = render([comparison], "markdown")
    assert markdown.splitlines()[0] == "| protocol | metric | run | timm:tinycnn |"
    assert markdown.splitlines()[1] == "|---|---|---|---|"


def test_select_rows_matches_run_folders_however_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "runs" / "simclr"
    run.mkdir(parents=True)
    rows = [EvaluationRow("runs/simclr", "f", "builtin", "knn", "top1", 1.0, 0, 1.0, run_path=str(run.resolve())),
            EvaluationRow("timm:resnet18+w.safetensors", "f", "builtin", "knn", "top1", 1.0, 0, 1.0)]
    monkeypatch.chdir(tmp_path)
    assert len(select_rows(rows, ["./runs/simclr/"])) == 1
    assert len(select_rows(rows, [str(run.resolve())])) == 1
    assert len(select_rows(rows, ["timm:resnet18"])) == 1
    with pytest.raises(PretrainlabError, match="did you mean 'timm:resnet18"):
        select_rows(rows, ["timm:resnet19+w.safetensors"])


def test_compare_store_gives_one_comparison_per_dataset(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "s.db")
    store.add_evaluations(stored_rows())
    assert [c.data for c in compare_store(store)] == ["builtin", "other"]
    assert [c.data for c in compare_store(store, data="other")] == ["other"]
    with pytest.raises(PretrainlabError, match="holds no evaluations for data 'nope'"):
        compare_store(store, data="nope")


def test_cli_compare_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = ResultsStore(tmp_path / "empty.db")
    empty.add_evaluations([])  # creates the tables, holds nothing
    assert main(["compare", "--store", str(empty.path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "holds no evaluations" in error and len(error.splitlines()) == 1
    assert main(["compare", "--store", str(tmp_path / "absent.db")]) == 2
    assert "no results store" in capsys.readouterr().err


def test_cli_compare_prints_and_writes_html(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = ResultsStore(tmp_path / "s.db")
    store.add_evaluations(stored_rows())
    html = tmp_path / "cmp.html"
    assert main(["compare", "run", "timm:tinycnn", "--data", "builtin", "--store", str(store.path),
                 "--format", "markdown", "--html", str(html)]) == 0
    assert "| knn | top1 |" in capsys.readouterr().out
    page = html.read_text()
    assert "timm:tinycnn" in page and "mean z" in page and "<script src" not in page and 'class="sortable"' in page


def test_measured_call_time_wins_over_per_metric_seconds() -> None:
    # noisy-label style: each metric reports its own part; the gauntlet measured the whole call
    rows = [EvaluationRow("b", "f", "d", "noisy", metric, 1.0, seed, seconds, call_seconds=call, created=seed)
            for seed, call in ((0, 10.0), (1, 20.0)) for metric, seconds in (("clean", 2.0), ("sym20", 3.0))]
    assert build_comparison(rows, "d").protocol_seconds[("b", "noisy")] == pytest.approx(15.0)
