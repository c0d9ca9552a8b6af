"""Report pages from their sources, without a browser: every section, escaping, size; levels; TensorBoard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_fixtures import HOSTILE_NAME, HOSTILE_SCRIPT, comparison_rows, make_full_run, png_bytes

from pretrainlab.cli import main
from pretrainlab.report import comparison_page, write_run_report
from pretrainlab.report.comparison import build_comparison
from pretrainlab.report.levels import by_scale, level_curves, level_unit, parse_level
from pretrainlab.train.tensorboard import TensorBoardLog

MAX_PAGE_BYTES = 5_000_000


def test_levels_are_read_from_metric_names() -> None:
    assert parse_level("top1@10%").value == 10 and parse_level("top1@10%").series == "top1"
    assert parse_level("top1@sym40+elr").series == "top1@sym+elr" and parse_level("top1@sym40").unit == "sym"
    assert parse_level("pgd_linf@8/255").value == pytest.approx(8 / 255)
    assert parse_level("top1@gaussian_noise") is None and parse_level("top1") is None
    curves = level_curves({"top1@clean": 90.0, "top1@sym20": 80.0, "top1@sym40": 70.0, "top1@nmtune": 1.0})
    assert curves == {"top1@sym": [(0.0, 90.0), (20.0, 80.0), (40.0, 70.0)]}  # clean is level 0


def test_levels_of_different_scales_get_different_charts() -> None:
    """L-inf budgets (8/255) and L2 norms (0.5, 2) of one attack protocol must not share an x axis."""
    means = {"top1@clean": 80.0, "pgd_linf@4/255": 40.0, "pgd_linf@8/255": 20.0, "pgd_l2@0.5": 30.0, "pgd_l2@2": 1.0}
    groups = by_scale(means)
    assert len(groups) == 2 and all("top1@clean" in group for group in groups)
    assert {frozenset(level_curves(group)) for group in groups} == {frozenset({"pgd_linf"}), frozenset({"pgd_l2"})}
    assert level_unit(list(groups[1])) == "level" and level_unit(list(groups[0])) == "epsilon"


def script_free(page: str) -> str:
    """The page without the one script it carries and its JSON data (whose `<` are \\u003c escapes)."""
    return re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)


def test_full_run_page_escapes_names_and_stays_small(tmp_path: Path) -> None:
    run = make_full_run(tmp_path / "runs", tmp_path / "store.db")
    path = write_run_report(run, tmp_path / "store.db")
    page = path.read_text()
    assert path.stat().st_size < MAX_PAGE_BYTES
    assert len(re.findall(r"<script\b", page)) == 2  # the page's own script and its network data, nothing else
    assert HOSTILE_SCRIPT not in page and HOSTILE_NAME not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in script_free(page)
    assert "none yet" not in page and "no attack results" not in page and "no explanations yet" not in page
    # charts: loss terms, lr, throughput, grad_norm, kNN, few_labels, noisy_labels, corruption, adversarial, the
    # explanation's layer curve and the filter health
    assert page.count("<svg") == 11
    assert "random init top1" in page and "random init pgd_linf" in page  # baselines beside the run's curves
    assert "+30.00" in page  # difference to random init
    assert page.count('<div class="gallery">') == 2 and script_free(page).count("data:image/png;base64,") == 4


def noise_png(path: Path, side: int) -> None:
    """An incompressible PNG of about 3 * side^2 bytes."""
    Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)


def test_page_with_large_figures_stays_under_5_mb(tmp_path: Path) -> None:
    run = make_full_run(tmp_path / "runs", tmp_path / "store.db", name="big", data="builtin")
    for folder in ("explain", "attack"):
        for index in range(6):
            noise_png(run / folder / f"figure{index}.png", 360)  # ~390 KB each
        noise_png(run / folder / "huge.png", 700)  # ~1.5 MB: listed, not embedded
    noise_png(run / "reconstructions.png", 560)  # ~0.95 MB
    page = write_run_report(run, tmp_path / "store.db").read_text()
    assert len(page.encode()) < MAX_PAGE_BYTES
    assert "huge.png" in page and "not embedded (page size budget)" in page


def test_comparison_page_sections_per_data_spec() -> None:
    rows = comparison_rows()
    comparisons = [build_comparison(rows, data) for data in sorted({row.data for row in rows})]
    page = comparison_page(comparisons)
    assert page.count('<section class="data"') == 2 and page.count("<option") == 3
    assert page.count('class="sortable"') == 6 and 'class="zbar"' in page
    assert HOSTILE_SCRIPT not in page and HOSTILE_NAME not in page
    assert page.index("runs/simclr") < page.index("timm:resnet18")  # ranked: best first
    assert "few_labels: every backbone" in page


def test_tensorboard_log_holds_scalars_and_images(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = TensorBoardLog(tmp_path)
    for step in (1, 2, 3):
        board.scalars({"step": step, "loss": 1.0 / step, "lr": 0.1, "note": "text", "flag": True}, step)
    board.scalars({"knn_top1": 55.0}, 3, "monitor")
    (tmp_path / "r.png").write_bytes(png_bytes((1, 2, 3)))
    board.image("reconstructions", tmp_path / "r.png", 3)
    board.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["monitor/knn_top1", "train/loss", "train/lr"]
    assert [event.value for event in events.Scalars("train/loss")] == pytest.approx([1.0, 0.5, 1 / 3])
    assert events.Tags()["images"] == ["reconstructions"]


def test_pretrain_writes_report_network_view_and_tensorboard(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["pretrain", "--method", "simclr", "--backbone", "tinycnn", "--out", str(run), "--epochs", "1",
                 "--batch-size", "32", "--max-train", "64", "--knn-every", "1", "--tensorboard", "--no-progress",
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    page = (run / "report.html").read_text()
    assert 'id="network-data"' in page and "online kNN top-1" in page
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/images_per_second", "monitor/knn_top1"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("train/loss")) == 1  # 2 steps, logged at the last
    (run / "network.json").unlink()
    assert main(["report", str(run), "--network", "--device", "cpu"]) == 0
    assert '"stages"' in (run / "network.json").read_text()
    assert 'id="network-data"' in (run / "report.html").read_text()


def test_a_broken_network_file_leaves_a_hint_not_a_broken_page(tmp_path: Path) -> None:
    from pretrainlab.report.network_view import network_section

    entry = {"channel": 0, "png": "", "mean": float("nan"), "std": 0, "min": 0, "max": 0, "active": 0}
    (tmp_path / "network.json").write_text(json.dumps({"stages": [{"name": "a", "shape": [1, 2, 2]}],
                                                       "images": [{"label": "x", "input": "", "stages": [[entry]]}]}))
    assert "not finite" in "".join(network_section(tmp_path))
    (tmp_path / "network.json").write_text("{not json")
    assert "no usable network.json" in "".join(network_section(tmp_path))
