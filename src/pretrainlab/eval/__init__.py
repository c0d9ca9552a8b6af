"""Transfer protocols on frozen or fine-tuned backbones, each returning an `EvalResult`.

`protocols/` holds one file per protocol, registered in `PROTOCOLS` by existing; the modules beside it
are the machinery protocols share (features, kNN and linear classifiers, fine-tuning, records, targets).
"""

from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, evaluate
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget, load_target

__all__ = ["PROTOCOLS", "EvalContext", "EvalResult", "EvalTarget", "evaluate", "load_target"]
