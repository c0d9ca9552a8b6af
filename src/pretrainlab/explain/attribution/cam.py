"""The CAM family, on pytorch-grad-cam (PyPI `grad-cam`): this module only chooses and calls it.

Grad-CAM (Selvaraju et al., arXiv 1610.02391), Grad-CAM++ (Chattopadhyay et al., arXiv 1710.11063),
Score-CAM (Wang et al., arXiv 1910.01279), XGrad-CAM (Fu et al., arXiv 2008.02312), LayerCAM (Jiang et al.,
IEEE TIP 2021), HiResCAM (Draelos and Carin, arXiv 2011.08891) and Eigen-CAM (Muhammad and Yeasin,
"Eigen-CAM: Class Activation Map using Principal Components", arXiv 2008.00299). Eigen-CAM uses no
gradient and no class: the first principal component of the layer's activations, so it explains a
self-supervised backbone with no head at all.

Maps come back as the library makes them: ReLU, min-max scaled to [0, 1] per image, resized to the input.
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import torch
import torch.nn as nn
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from pretrainlab.errors import PretrainlabError, unknown_name_message

log = logging.getLogger(__name__)

CAM_CLASSES = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "scorecam": ScoreCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "eigencam": EigenCAM,
}
GRADIENT_FREE = ("eigencam",)  # need no class and no classifier
SCORE_CAM_BATCH = 64  # masked copies scored at once (the library's default is 16)


def cam_maps(model: nn.Module, layer: nn.Module, inputs: torch.Tensor, classes: np.ndarray | None, method: str,
             reshape_transform=None, batch_size: int = 16) -> np.ndarray:  # noqa: ANN001
    """Class activation maps (N, H, W) in [0, 1] of `inputs` (N, C, H, W) for `classes` (N,) via pytorch-grad-cam.

    Args:
        model: images -> logits (B, K) (or pooled features, for Eigen-CAM).
        layer: the module whose activations (or tokens, with `reshape_transform`) the CAM weighs.
        classes: the class explained per image; None explains the predicted class.
        method: a name of CAM_CLASSES.
    """
    if method not in CAM_CLASSES:
        raise PretrainlabError(unknown_name_message("CAM method", method, CAM_CLASSES))
    model.eval()
    maps = []
    cam = CAM_CLASSES[method](model=model, target_layers=[layer], reshape_transform=reshape_transform)
    if method == "scorecam":
        cam.batch_size = SCORE_CAM_BATCH
    try:
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            targets = None if classes is None else [ClassifierOutputTarget(int(c))
                                                    for c in classes[start : start + batch_size]]
            # Score-CAM prints a tqdm bar per image: the caller shows one bar for the whole job instead.
            with contextlib.redirect_stderr(io.StringIO()):
                maps.append(cam(input_tensor=chunk, targets=targets))
    finally:
        cam.activations_and_grads.release()
    return np.concatenate(maps).astype(np.float32)
