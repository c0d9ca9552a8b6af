"""Transfer protocols on frozen or fine-tuned backbones, each returning an `EvalResult`.

Every module of this package is imported here, so a protocol module registers itself in
`PROTOCOLS` by existing.
"""

import importlib
import pkgutil

from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, evaluate
from pretrainlab.eval.record import EvalResult
from pretrainlab.eval.target import EvalTarget, load_target

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["PROTOCOLS", "EvalContext", "EvalResult", "EvalTarget", "evaluate", "load_target"]
