"""The gauntlet: every protocol that applies to the data, each seed separately, on one backbone.

The idea of putting any backbone through one fixed suite is Battle of the Backbones (Goldblum et al.,
"Battle of the Backbones: A Large-Scale Comparison of Pretrained Models across Computer Vision Tasks",
arXiv 2310.19909). Features are extracted once per backbone and split: all protocols and seeds share
one `EvalContext`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from pretrainlab.data.source import ImageSource
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, evaluate, skip_reason
from pretrainlab.eval.record import EvalResult

log = logging.getLogger(__name__)

# Called with the records of one (protocol, seed), the seed and the call's wall time as soon as they exist,
# so an interrupted gauntlet keeps them.
ResultSink = Callable[[list[EvalResult], int, float], object]


@dataclass
class GauntletPlan:
    """Args:
        protocols: what will run, in order.
        skipped: protocol -> why it does not apply to the data.
        explicit: the user named the protocols, so one that turns out not to apply is an error, not a skip.
    """

    protocols: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    explicit: bool = False


@dataclass
class GauntletOutcome:
    per_seed: list[tuple[int, EvalResult]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> list[EvalResult]:
        return summarise(self.per_seed)


def plan_protocols(source: ImageSource, requested: Sequence[str] | None = None) -> GauntletPlan:
    """The protocols to run: `requested` (each must apply to `source`), or every registered one that applies."""
    if requested:
        for name in requested:
            PROTOCOLS.get(name)  # unknown names fail here, with the closest match
        for name in requested:
            if (reason := skip_reason(name, source)) is not None:
                raise PretrainlabError(f"protocol '{name}' {reason}; drop it from --protocols")
        return GauntletPlan(list(dict.fromkeys(requested)), explicit=True)
    plan = GauntletPlan([])
    for name in PROTOCOLS.names():
        reason = skip_reason(name, source)
        if reason is None:
            plan.protocols.append(name)
        else:
            plan.skipped[name] = reason
    if not plan.protocols:
        raise PretrainlabError(f"no registered protocol applies to dataset '{source.spec}' "
                               f"({'; '.join(f'{k}: {v}' for k, v in plan.skipped.items())})")
    return plan


def seed_everything(seed: int) -> None:
    """Protocols that draw from the global generators get the same numbers for the same seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def state_fingerprint(module: torch.nn.Module) -> str:
    """A hash of every tensor of `module`'s state: names the weights of a model that has no file."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def run_gauntlet(context: EvalContext, plan: GauntletPlan, seeds: Iterable[int], sink: ResultSink | None = None,
                 keep_going: bool = False) -> GauntletOutcome:
    """Runs each planned protocol once per seed with `context.options["seed"] = seed`.

    A protocol that raises `NotApplicable` (or another `PretrainlabError`) while running is skipped with
    its message when the suite was chosen automatically (or with `keep_going`); `keep_going` also moves
    on past a protocol that crashes, listing it as failed.
    Raises RuntimeError if a protocol changed the backbone's weights: every later protocol and seed would
    measure a different network.
    """
    started = time.perf_counter()
    outcome = GauntletOutcome(skipped=dict(plan.skipped))
    seeds = list(seeds)
    before = state_fingerprint(context.target.backbone)
    for protocol in plan.protocols:
        for seed in seeds:
            seed_everything(seed)
            context.options["seed"] = seed
            call_started = time.perf_counter()
            try:
                results = evaluate(context, protocol)
            except PretrainlabError as error:
                if plan.explicit and not keep_going:
                    raise
                outcome.skipped[protocol] = str(error)
                log.warning("skipped %s: %s", protocol, error)
                break
            except Exception as error:  # noqa: BLE001 - with keep_going one broken protocol must not stop the rest
                if not keep_going:
                    raise
                outcome.failed[protocol] = f"{type(error).__name__}: {error}"
                log.error("protocol %s failed:\n%s", protocol, traceback.format_exc())
                break
            metrics = [result.metric for result in results]
            if len(set(metrics)) < len(metrics):  # comparisons key on (protocol, metric): one would hide another
                log.warning("protocol %s returned the metric names %s more than once; name variants apart, "
                            "e.g. top1@10%%", protocol, sorted({m for m in metrics if metrics.count(m) > 1}))
            if sink is not None:
                sink(results, seed, time.perf_counter() - call_started)
            outcome.per_seed.extend((seed, result) for result in results)
            log.info("%s seed %d: %s", protocol, seed, ", ".join(f"{r.metric} {r.value:.4g}" for r in results))
        if state_fingerprint(context.target.backbone) != before:
            raise RuntimeError(f"protocol '{protocol}' changed the evaluated backbone's weights in place; "
                               "a protocol must train a copy")
    outcome.seconds = time.perf_counter() - started
    return outcome


def mean_and_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the deviation is None for a single value."""
    if not values:
        return math.nan, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summarise(per_seed: Iterable[tuple[int, EvalResult]]) -> list[EvalResult]:
    """One record per (protocol, metric): value = mean over seeds, spread = their standard deviation."""
    groups: dict[tuple[str, str], list[tuple[int, EvalResult]]] = {}
    for seed, result in per_seed:
        groups.setdefault((result.protocol, result.metric), []).append((seed, result))
    summaries = []
    for members in groups.values():
        values = [result.value for _, result in members]
        mean, std = mean_and_std(values)
        first = members[0][1]
        settings = {**first.settings, "seeds": [seed for seed, _ in members], "values": values}
        settings.pop("seed", None)
        summaries.append(replace(first, value=mean, spread=std, settings=settings,
                                 seconds=statistics.fmean(result.seconds for _, result in members)))
    return summaries


def format_summary(outcome: GauntletOutcome) -> str:
    """Text lines: mean ± std over seeds per protocol and metric, then skipped and failed protocols."""
    lines = []
    for result in outcome.summary():
        spread = f" ± {result.spread:.4g}" if result.spread is not None else ""
        direction = "" if result.higher_is_better else "  (lower is better)"
        seeds = len(result.settings["seeds"])
        lines.append(f"{result.protocol:>12s}  {result.metric:<24s} {result.value:10.4g}{spread}  "
                     f"[{seeds} seed{'s' if seeds > 1 else ''}, {result.seconds:.1f} s each]{direction}")
    lines += [f"{'skipped':>12s}  {name}: {reason}" for name, reason in outcome.skipped.items()]
    lines += [f"{'FAILED':>12s}  {name}: {reason}" for name, reason in outcome.failed.items()]
    lines.append(f"gauntlet wall time {outcome.seconds:.1f} s")
    return "\n".join(lines)
