"""The `linear` protocol: an L-BFGS logistic-regression probe on frozen features (the probe is eval/linear.py)."""

from __future__ import annotations

import time

from pretrainlab.eval.linear import linear_probe_accuracy
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, takes_options
from pretrainlab.eval.record import EvalResult


@PROTOCOLS.register("linear")
@takes_options()
def linear_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    seed = int(context.options.get("seed", 0))
    accuracy, l2 = linear_probe_accuracy(context.features("train"), context.labels("train"),
                                         context.features("test"), context.labels("test"), seed)
    return [EvalResult("linear", context.source.spec, "top1", accuracy, time.perf_counter() - started,
                       settings={**context.base_settings(), "l2": l2, "solver": "lbfgs", "seed": seed,
                                 "validation": "10% of train, stratified, drawn by the seed"},
                       backbone=context.target.label)]
