"""The report pages in a real headless Chromium driven by Playwright: no console errors, every chart drawn,
the network view, sorting and filtering work, hostile names stay text. Screenshots land in the test's tmp folder.

Playwright's own browser download is not used: the system Chromium (Debian package `chromium`, which
`.ci/run` installs) is found on PATH or named by PRETRAINLAB_CHROMIUM. Without any browser these tests skip,
and the run's summary says so loudly (conftest.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import EPOCHS, HOSTILE_NAME, HOSTILE_SCRIPT, STEPS, comparison_rows, make_full_run

from pretrainlab.report import comparison_page, write_run_report
from pretrainlab.report.comparison import build_comparison
from pretrainlab.report.network_snapshot import MAPS_PER_STAGE

NO_BROWSER = "no headless Chromium"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    named = os.environ.get("PRETRAINLAB_CHROMIUM")
    if named:
        return named
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"{NO_BROWSER}: playwright is not installed (pip install -e '.[browser]')")
    executable = find_chromium()
    with sync_playwright() as playwright:
        try:  # the system Chromium, else a playwright-managed one if `playwright install chromium` was run
            launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception as error:  # noqa: BLE001 - any launch failure means there is no usable browser
            pytest.skip(f"{NO_BROWSER}: {executable or 'none on PATH'} did not start "
                        f"({str(error).splitlines()[0]}); install it: apt-get install chromium")
        yield launched
        launched.close()


class OpenPage:
    """A page with its console errors, uncaught exceptions and dialogs (an alert means injected code ran)."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.goto(path.resolve().as_uri())

    def clean(self) -> None:
        self.page.wait_for_timeout(100)  # an injected onerror handler fires once its image fails to load
        assert self.errors == [] and self.dialogs == []


def chart_marks(page: Any, title: str) -> tuple[int, int]:
    """(marks drawn, marks the chart says it has) of the chart titled `title`."""
    chart = page.locator(f'figure.chart:has(svg[aria-label="{title}"])')
    return chart.locator("circle.mark").count(), int(chart.get_attribute("data-marks"))


def test_dialog_listener_sees_an_alert(browser: Any, tmp_path: Path) -> None:
    """The escaping checks below can fail: code that does run is caught."""
    page = tmp_path / "alert.html"
    page.write_text("<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>")
    opened = OpenPage(browser, page)
    opened.page.wait_for_timeout(200)
    assert opened.dialogs == ["1"]


def test_run_page_in_a_browser(browser: Any, tmp_path: Path) -> None:
    run = make_full_run(tmp_path / "runs", tmp_path / "store.db")
    opened = OpenPage(browser, write_run_report(run, tmp_path / "store.db"))
    page = opened.page
    opened.clean()
    for figure in page.locator("figure.chart").all():  # every chart drew every point it has
        assert figure.locator("circle.mark").count() == int(figure.get_attribute("data-marks")) > 0
    assert chart_marks(page, "pre-training loss per term") == (3 * STEPS, 3 * STEPS)  # loss, two terms
    assert chart_marks(page, "online kNN top-1 (k=20)")[0] == EPOCHS
    assert chart_marks(page, "few_labels: accuracy by level")[0] == 2 * 3  # this run and random init, 3 fractions
    loss_chart = page.locator('figure.chart:has(svg[aria-label="pre-training loss per term"])')
    loss_chart.locator("circle.mark").nth(5).hover()
    assert loss_chart.locator(".readout").inner_text().startswith("loss: step 6")

    view = page.locator("#network-view")
    assert view.locator(".net-images button span").all_inner_texts() == ["zero", HOSTILE_SCRIPT, HOSTILE_NAME]
    stages = view.locator("button.stage")
    assert stages.count() >= 2
    stages.nth(1).click()
    assert "active" in (stages.nth(1).get_attribute("class") or "")
    channels = int(stages.nth(1).inner_text().split()[-1].split("x")[0])
    assert view.locator("img.fmap").count() == min(MAPS_PER_STAGE, channels)
    view.locator("img.fmap").first.hover()
    assert "channel" in view.locator(".net-stats").inner_text() and "mean" in view.locator(".net-stats").inner_text()
    view.locator(".net-images button").nth(1).click()
    assert "active" in (view.locator(".net-images button").nth(1).get_attribute("class") or "")
    page.screenshot(path=str(tmp_path / "run_page.png"), full_page=True)
    view.screenshot(path=str(tmp_path / "network_view.png"))
    opened.clean()


def test_comparison_page_sorts_and_filters_in_a_browser(browser: Any, tmp_path: Path) -> None:
    rows = comparison_rows()
    comparisons = [build_comparison(rows, data) for data in sorted({row.data for row in rows})]
    path = tmp_path / "compare.html"
    path.write_text(comparison_page(comparisons))
    opened = OpenPage(browser, path)
    page = opened.page
    opened.clean()
    section = page.locator("section.data").first
    results = section.locator("table.sortable").first
    header = results.locator("th", has_text="knn top1")

    def knn_column() -> list[float]:
        column = [h.inner_text() for h in results.locator("th").all()].index(header.inner_text().strip())
        return [float(row.locator("td").nth(column).get_attribute("data-value"))
                for row in results.locator("tbody tr").all()]

    assert knn_column() == sorted(knn_column(), reverse=True)  # ranked order to begin with
    header.click()
    assert knn_column() == sorted(knn_column()) and header.get_attribute("data-order") == "asc"
    header.click()
    assert knn_column() == sorted(knn_column(), reverse=True)
    assert section.locator(".zbar").count() >= 3
    page.screenshot(path=str(tmp_path / "comparison_page.png"), full_page=True)
    page.select_option("#data-filter", "builtin")
    assert page.locator("section.data:visible").count() == 1
    assert page.locator("section.data:visible").get_attribute("data-spec") == "builtin"
    page.select_option("#data-filter", HOSTILE_SCRIPT)
    assert page.locator("section.data:visible h2").inner_text() == f"data: {HOSTILE_SCRIPT}"
    opened.clean()
