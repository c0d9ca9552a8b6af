"""Comparisons and self-contained HTML reports, read from the results store and run folders only."""

from pretrainlab.report.compare_page import comparison_page, write_comparison_report
from pretrainlab.report.comparison import (
    DEFAULT_RANK_EXCLUDE,
    Comparison,
    aggregate_scores,
    build_comparison,
    compare_store,
    rank,
    zscores,
)
from pretrainlab.report.formats import FORMATS, render
from pretrainlab.report.run_page import refresh_run_report, run_page, write_run_report

__all__ = ["DEFAULT_RANK_EXCLUDE", "FORMATS", "Comparison", "aggregate_scores", "build_comparison",
           "compare_store", "comparison_page", "rank", "refresh_run_report", "render", "run_page",
           "write_comparison_report",
           "write_run_report", "zscores"]
