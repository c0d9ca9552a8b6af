"""The methods table at longer budgets: rows of RESULTS/epochsE/NAME-seedS.json beside the table's own rows.

`python bench/methods_table.py --render` calls `render_budgets`, which writes one table per longer budget
into docs/methods.md between `<!-- budget-table -->` and `<!-- /budget-table -->`: for each method, its
row at the table's budget (seed 0), the mean of the seeds measured at the longer budget with every seed's
value, and the kNN rank among the methods of that table at both budgets (so a changed ordering reads off
one column). A method whose seeds have not all finished shows the ones that have and says which are missing.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

SEEDS = (0, 1)
START, END = "<!-- budget-table -->", "<!-- /budget-table -->"


def seed_rows(folder: Path) -> dict[str, dict[int, dict]]:
    """{row stem (e.g. "mocov2"): {seed: row}} of one budget folder."""
    rows: dict[str, dict[int, dict]] = {}
    for path in sorted(folder.glob("*.json")):
        match = re.fullmatch(r"(.+)-seed(\d+)", path.stem)
        if match:
            rows.setdefault(match.group(1), {})[int(match.group(2))] = json.loads(path.read_text())
    return rows


def ranks(values: dict[str, float]) -> dict[str, int]:
    """1 for the highest value."""
    order = sorted(values, key=lambda name: -values[name])
    return {name: order.index(name) + 1 for name in values}


def spread(values: list[float]) -> str:
    """"mean (a, b)" of the seeds' values."""
    joined = ", ".join(f"{value:.2f}" for value in values)
    return f"{statistics.fmean(values):.2f} ({joined})"


def budget_table(results: Path, epochs: int, base_epochs: int) -> list[str]:
    """Markdown lines of one longer budget's table (header line, table, the status of its rows)."""
    longer = seed_rows(results / f"epochs{epochs}")
    base = {stem: json.loads((results / f"{stem}.json").read_text())
            for stem in longer if (results / f"{stem}.json").exists()}
    measured = {stem: [seeds[s]["knn_top1"] for s in sorted(seeds)] for stem, seeds in longer.items()}
    base_ranks = ranks({stem: row["knn_top1"] for stem, row in base.items()})
    long_ranks = ranks({stem: statistics.fmean(values) for stem, values in measured.items()})
    lines = [f"### {epochs} epochs ({epochs / base_epochs:g}x), seeds {', '.join(map(str, SEEDS))}", "",
             f"| method | backbone | kNN, {base_epochs} ep | kNN, {epochs} ep: mean (seeds) | linear, {base_epochs} ep "
             f"| linear, {epochs} ep: mean (seeds) | kNN rank {base_epochs} ep -> {epochs} ep | seeds missing |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for stem in sorted(longer, key=lambda name: long_ranks[name]):
        seeds, row = longer[stem], base.get(stem)
        knn = spread([seeds[s]["knn_top1"] for s in sorted(seeds)])
        linear = spread([seeds[s]["linear_top1"] for s in sorted(seeds)])
        first = next(iter(seeds.values()))
        missing = ", ".join(str(s) for s in SEEDS if s not in seeds) or "-"
        base_knn, base_linear = ((f"{row['knn_top1']:.2f}", f"{row['linear_top1']:.2f}") if row else ("-", "-"))
        rank = f"{base_ranks.get(stem, '-')} -> {long_ranks[stem]}"
        lines.append(f"| {stem} | {first['backbone']} | {base_knn} | {knn} | {base_linear} | {linear} | {rank} | "
                     f"{missing} |")
    done = sum(len(seeds) for seeds in longer.values())
    lines += ["", f"{done} of the rows above have finished (method x seed); ranks are among these methods only, "
                  f"at {epochs} ep by the mean over the seeds finished."]
    return lines


def render_budgets(results: Path, table: Path, base_epochs: int) -> None:
    """Writes every longer budget found under `results` into `table` between the budget markers."""
    folders = sorted(int(path.name.removeprefix("epochs")) for path in results.glob("epochs*")
                      if path.is_dir() and path.name.removeprefix("epochs").isdigit())
    if not folders:
        return
    text = table.read_text()
    if START not in text:
        text += f"\n{START}\n{END}\n"
    lines = []
    for epochs in folders:
        lines += budget_table(results, epochs, base_epochs) + [""]
    start, end = text.index(START), text.index(END)
    table.write_text(text[: start + len(START)] + "\n" + "\n".join(lines) + text[end:])
