"""`attribution`: Saliency, Integrated Gradients, Guided Backprop, DeconvNet (Captum) and RISE, scored as `cam` is.

Options: attribution_methods (default all five); rise_masks (default 512); and the quality options of `cam`.
"""

from __future__ import annotations

from pretrainlab.explain.attribution import OTHER_METHODS
from pretrainlab.explain.context import ExplainContext
from pretrainlab.explain.registry import AnalysisOutput, register_analysis
from pretrainlab.explain.scoring import QUALITY_OPTIONS, method_list, score_methods


@register_analysis("attribution", options=QUALITY_OPTIONS + ("attribution_methods", "rise_masks"))
def attribution(context: ExplainContext) -> AnalysisOutput:
    context.require_classes("attribution")
    return score_methods(context, "attribution", method_list(context, "attribution_methods", OTHER_METHODS))
