"""Shared fixtures: small real data and tiny settings so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("PRETRAINLAB_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "data"))
os.environ.setdefault("PRETRAINLAB_STORE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "store",
                                                   "pretrainlab.db"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def builtin_source():
    from pretrainlab.data import load_source

    return load_source("builtin")


@pytest.fixture()
def rgb_batch() -> torch.Tensor:
    """16 random uint8 RGB images (B, H, W, C) at 32 px."""
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8, generator=generator)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Browser tests that skipped for want of a browser are said loudly, not only as an 's' in the dots."""
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if "no headless Chromium" in str(getattr(report, "longrepr", ""))]
    if skipped:
        reason = str(skipped[0].longrepr[-1]) if isinstance(skipped[0].longrepr, tuple) else str(skipped[0].longrepr)
        terminalreporter.write_sep("!", f"{len(skipped)} BROWSER TESTS SKIPPED: {reason}", red=True, bold=True)
        terminalreporter.write_line("install Chromium to run them: apt-get install chromium (see README.md, "
                                    "'Browser tests' under Reports)", red=True)
