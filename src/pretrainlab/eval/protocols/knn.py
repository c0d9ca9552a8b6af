"""The `knn` protocol: weighted k-nearest-neighbour top-1 on frozen features (the classifier is eval/knn.py)."""

from __future__ import annotations

import time

from pretrainlab.eval.knn import knn_accuracy, knn_options
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, takes_options
from pretrainlab.eval.record import EvalResult


@PROTOCOLS.register("knn")
@takes_options("k", "temperature")
def knn_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    k, temperature = knn_options(context.options)
    accuracy, used_k = knn_accuracy(context.features("train"), context.labels("train"), context.features("test"),
                                    context.labels("test"), k, temperature)
    return [EvalResult("knn", context.source.spec, "top1", accuracy, time.perf_counter() - started,
                       settings={**context.base_settings(), "k": used_k, "temperature": temperature,
                                 "deterministic": True},  # no randomness: the spread over seeds is 0
                       backbone=context.target.label)]
