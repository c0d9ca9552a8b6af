"""explain/: what a backbone has learned. Attribution maps with quality scores, attention patterns, filter health,
representation similarity, feature visualisation, dissection, COMET and linear interpreters.

Analyses are registered by name in `ANALYSES` (explain/analyses/, one file each); `explain_backbone` in
explain/session.py runs them on a run folder or timm:NAME and records one summary per metric in the store.
"""

import pretrainlab.explain.analyses  # noqa: E402,F401  (registers the analyses)
from pretrainlab.explain.context import ExplainContext, ExplainSettings
from pretrainlab.explain.registry import ANALYSES, AnalysisOutput

__all__ = ["ANALYSES", "AnalysisOutput", "ExplainContext", "ExplainSettings"]
