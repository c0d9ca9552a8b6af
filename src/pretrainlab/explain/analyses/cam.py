"""`cam`: the CAM family on pytorch-grad-cam, scored by ROAD, insertion/deletion, pointing game and box IoU.

Options: cam_methods (default all seven: gradcam, gradcam++, scorecam, xgradcam, layercam, hirescam, eigencam);
road_percentiles, insertion_steps, pointing_tolerance (px; default 15 px at 224 scaled to the input),
box_threshold (share of the map's maximum). On unlabeled data only eigencam applies.
"""

from __future__ import annotations

from pretrainlab.explain.attribution import CAM_METHODS
from pretrainlab.explain.context import ExplainContext
from pretrainlab.explain.registry import AnalysisOutput, register_analysis
from pretrainlab.explain.scoring import QUALITY_OPTIONS, method_list, score_methods


@register_analysis("cam", options=QUALITY_OPTIONS + ("cam_methods",))
def cam(context: ExplainContext) -> AnalysisOutput:
    return score_methods(context, "cam", method_list(context, "cam_methods", CAM_METHODS))
