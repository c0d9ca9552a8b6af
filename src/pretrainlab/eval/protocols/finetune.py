"""The `finetune` protocol: top-1 after fine-tuning the whole backbone with a fresh head (see eval/finetuning.py)."""

from __future__ import annotations

import time

from pretrainlab.eval.finetuning import FINETUNE_OPTIONS, FineTuning
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, takes_options
from pretrainlab.eval.record import EvalResult


@PROTOCOLS.register("finetune")
@takes_options(*FINETUNE_OPTIONS)
def finetune_protocol(context: EvalContext) -> list[EvalResult]:
    """Top-1 on the test split after fine-tuning on the whole training split."""
    started = time.perf_counter()
    seed = int(context.options.get("seed", 0))
    tuning = FineTuning(context)
    model = tuning.finetune(context.source.train.images, context.source.train.labels, seed)
    accuracy = tuning.test_top1(model)
    settings = {**context.base_settings(), **tuning.describe(len(context.source.train)), "seed": seed}
    return [EvalResult("finetune", context.source.spec, "top1", accuracy, time.perf_counter() - started,
                       settings=settings, backbone=context.target.label)]
