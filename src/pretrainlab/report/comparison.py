"""Backbones x protocols from stored per-seed rows: mean ± std over seeds, seconds, and an aggregate rank.

The rank follows Battle of the Backbones (Goldblum et al., arXiv 2310.19909): every metric is z-scored
across the compared backbones (sign flipped where lower is better), the z-scores are averaged within a
protocol so a protocol reporting many metrics does not outweigh one reporting a single number, the
protocol z-scores are averaged per backbone, and backbones are ranked by that mean.
"""

from __future__ import annotations

import difflib
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.gauntlet import mean_and_std
from pretrainlab.store.database import ResultsStore
from pretrainlab.store.rows import EvaluationRow

# Costs such as milliseconds and parameter counts describe a backbone; they do not make it better at a task.
DEFAULT_RANK_EXCLUDE = ("speed",)


@dataclass(frozen=True)
class Column:
    protocol: str
    metric: str
    higher_is_better: bool


@dataclass
class Cell:
    mean: float
    std: float | None
    seeds: list[int]
    seconds: float


@dataclass
class Comparison:
    """Args:
        backbones: display labels, best rank first.
        cells: (backbone, protocol, metric) -> Cell.
        protocol_seconds: (backbone, protocol) -> mean seconds of one evaluation (one seed).
        scores: backbone -> mean protocol z-score (None when it has no ranked metric).
        ranks: backbone -> rank, 1 is best; ties share the smaller rank.
    """

    data: str
    backbones: list[str]
    columns: list[Column]
    cells: dict[tuple[str, str, str], Cell]
    protocol_seconds: dict[tuple[str, str], float]
    scores: dict[str, float | None]
    ranks: dict[str, int | None]
    fingerprints: dict[str, str] = field(default_factory=dict)
    ranked_protocols: list[str] = field(default_factory=list)

    @property
    def protocols(self) -> list[str]:
        return list(dict.fromkeys(column.protocol for column in self.columns))

    def means(self, backbone: str, protocol: str) -> dict[str, float]:
        """metric -> mean of `backbone`'s cells of `protocol`."""
        return {m: c.mean for (b, p, m), c in self.cells.items() if b == backbone and p == protocol}


def zscores(values: dict[str, float], higher_is_better: bool = True) -> dict[str, float]:
    """(x - mean) / population std across backbones, negated when lower is better; 0 when all are equal."""
    finite = {key: value for key, value in values.items() if math.isfinite(value)}
    if len(finite) < 2:
        return dict.fromkeys(finite, 0.0)
    center, spread = statistics.fmean(finite.values()), statistics.pstdev(finite.values())
    sign = 1.0 if higher_is_better else -1.0
    return {key: 0.0 if spread == 0 else sign * (value - center) / spread for key, value in finite.items()}


def zscores_per_protocol(means: dict[tuple[str, str, str], float], columns: Sequence[Column],
                         protocols: Iterable[str] | None = None) -> dict[tuple[str, str], float]:
    """(backbone, protocol) -> mean z-score of that protocol's metrics across the backbones (every protocol of
    `columns` when `protocols` is None)."""
    backbones = sorted({backbone for backbone, _, _ in means})
    per_protocol: dict[tuple[str, str], list[float]] = {}
    chosen = None if protocols is None else set(protocols)
    for column in columns:
        if chosen is not None and column.protocol not in chosen:
            continue
        values = {b: means[(b, column.protocol, column.metric)] for b in backbones
                  if (b, column.protocol, column.metric) in means}
        for backbone, z in zscores(values, column.higher_is_better).items():
            per_protocol.setdefault((backbone, column.protocol), []).append(z)
    return {key: statistics.fmean(zs) for key, zs in per_protocol.items()}


def aggregate_scores(means: dict[tuple[str, str, str], float], columns: Sequence[Column],
                     protocols: Iterable[str]) -> dict[str, float | None]:
    """backbone -> mean over `protocols` of the mean z-score of that protocol's metrics."""
    per_protocol = zscores_per_protocol(means, columns, protocols)
    scores: dict[str, float | None] = {}
    for backbone in sorted({backbone for backbone, _, _ in means}):
        protocol_z = [z for (b, _), z in per_protocol.items() if b == backbone]
        scores[backbone] = statistics.fmean(protocol_z) if protocol_z else None
    return scores


def rank(scores: dict[str, float | None]) -> dict[str, int | None]:
    """1 for the highest score; equal scores share a rank ("1, 1, 3")."""
    ordered = sorted((score for score in scores.values() if score is not None), reverse=True)
    return {key: None if score is None else 1 + sum(1 for other in ordered if other > score + 1e-12)
            for key, score in scores.items()}


def latest_rows(rows: Iterable[EvaluationRow]) -> dict[str, list[EvaluationRow]]:
    """identity -> rows of its most recently evaluated weights, one per (protocol, metric, seed), the newest.

    A re-trained run gets new weights and thereby a new fingerprint: older rows describe other weights.
    """
    by_identity: dict[str, list[EvaluationRow]] = {}
    for row in sorted(rows, key=lambda r: r.created):
        by_identity.setdefault(row.identity, []).append(row)
    latest = {}
    for identity, members in by_identity.items():
        fingerprint = members[-1].fingerprint
        newest: dict[tuple[str, str, int], EvaluationRow] = {}
        for row in members:
            if row.fingerprint == fingerprint:
                newest[(row.protocol, row.metric, row.seed)] = row
        latest[identity] = list(newest.values())
    return latest


def build_comparison(rows: Iterable[EvaluationRow], data: str,
                     rank_exclude: Sequence[str] = DEFAULT_RANK_EXCLUDE) -> Comparison:
    """Aggregates the rows of one dataset spec."""
    groups = latest_rows(row for row in rows if row.data == data)
    labels = {identity: members[-1].backbone for identity, members in groups.items()}
    repeated = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    labels = {identity: identity if label in repeated else label for identity, label in labels.items()}
    cells: dict[tuple[str, str, str], Cell] = {}
    protocol_seconds: dict[tuple[str, str], float] = {}
    columns: dict[tuple[str, str], Column] = {}
    for identity, members in groups.items():
        label = labels[identity]
        by_metric: dict[tuple[str, str], list[EvaluationRow]] = {}
        call_seconds: dict[tuple[str, int], float] = {}
        for row in members:
            by_metric.setdefault((row.protocol, row.metric), []).append(row)
            columns.setdefault((row.protocol, row.metric), Column(row.protocol, row.metric, row.higher_is_better))
            # The call's measured wall time when recorded; else the largest time one of its metrics reports.
            key = (row.protocol, row.seed)
            call_seconds[key] = row.call_seconds if row.call_seconds is not None else max(
                call_seconds.get(key, 0.0), row.seconds)
        for (protocol, metric), metric_rows in by_metric.items():
            mean, std = mean_and_std([row.value for row in metric_rows])
            cells[(label, protocol, metric)] = Cell(mean, std, sorted(row.seed for row in metric_rows),
                                                    statistics.fmean(row.seconds for row in metric_rows))
        for protocol in {protocol for protocol, _ in call_seconds}:
            protocol_seconds[(label, protocol)] = statistics.fmean(
                seconds for (p, _), seconds in call_seconds.items() if p == protocol)
    ordered_columns = sorted(columns.values(), key=lambda c: (c.protocol, c.metric))
    ranked = [p for p in dict.fromkeys(c.protocol for c in ordered_columns) if p not in set(rank_exclude)]
    scores = aggregate_scores({key: cell.mean for key, cell in cells.items()}, ordered_columns, ranked)
    for label in labels.values():
        scores.setdefault(label, None)
    ranks = rank(scores)
    backbones = sorted(scores, key=lambda b: (ranks[b] is None, ranks[b] or 0, b))
    fingerprints = {labels[identity]: members[-1].fingerprint for identity, members in groups.items()}
    return Comparison(data, backbones, ordered_columns, cells, protocol_seconds, scores, ranks, fingerprints, ranked)


def select_rows(rows: Iterable[EvaluationRow], backbones: Sequence[str]) -> list[EvaluationRow]:
    """The rows of the named backbones: a run folder (matched by its resolved path, however it was typed),
    a label such as timm:resnet18 (also matching timm:resnet18+WEIGHTS), or a run folder's name."""
    rows = list(rows)
    if not backbones:
        return rows
    chosen: dict[str, EvaluationRow] = {}
    for name in backbones:
        path = Path(name)
        resolved = str(path.resolve()) if path.is_dir() else None
        matches = [row for row in rows if (resolved is not None and row.run_path == resolved)
                   or row.backbone in (name, name.rstrip("/")) or row.backbone.startswith(f"{name}+")
                   or (row.run_path is not None and Path(row.run_path).name == name)]
        if not matches:
            known = sorted({row.backbone for row in rows})
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise PretrainlabError(f"the store holds no evaluations of '{name}'{hint} backbones in the store: "
                                   f"{', '.join(known)}")
        chosen.update((row.uid, row) for row in matches)
    return list(chosen.values())


def compare_store(store: ResultsStore, backbones: Sequence[str] = (), data: str | None = None,
                  rank_exclude: Sequence[str] = DEFAULT_RANK_EXCLUDE) -> list[Comparison]:
    """One comparison per dataset spec (or only `data`), of `backbones` (default: all in the store)."""
    rows = store.require_existing().evaluations(data)
    if not rows:
        where = f" for data '{data}' (the store holds: {', '.join(store.data_specs()) or 'nothing'})" if data else ""
        raise PretrainlabError(f"results store {store.path} holds no evaluations{where}; "
                               "run `pretrainlab gauntlet BACKBONE --data SPEC` first")
    rows = select_rows(rows, backbones)
    specs = sorted({row.data for row in rows})
    return [build_comparison(rows, spec, rank_exclude) for spec in specs]
