"""DITO: detection-oriented image-text pre-training, CLIP plus a region-level contrast.

Kim, Angelova and Kuo, "Detection-Oriented Image-Text Pretraining for Open-Vocabulary Detection",
arXiv 2310.00161. The paper's point: image-level contrastive pre-training (CLIP) only teaches the pooled
image to match its text, while an open-vocabulary detector classifies REGIONS of the feature map by their
text embeddings. DITO therefore pre-trains the detector's own path: region features are RoI-Aligned from
the feature maps, passed through the detector's head and contrasted with text under the same contrastive
loss, so the pre-trained representation already aligns regions with language.

Here, on data whose images carry object boxes (`composed:` canvases, data/boxes.py), each step adds to
CLIP's image-caption loss (methods/clip.py, unchanged) a region-level term: every object box that
survives the view's crop (at least `min_visible` of its area inside) is RoI-Aligned (2x2, averaged) from the
last feature map of the same view, projected by the SAME image projection CLIP uses (so region and image
embeddings share the joint space the probes read), and classified against the text embeddings of every
class name ("a 7") by softmax cross-entropy at the learned temperature: region-to-text contrast with the
vocabulary as negatives. loss = image loss + region_weight * region loss.

What differs from the paper, and why: the paper has no boxes and contrasts whole-image boxes pooled at
every level of a feature pyramid through a Faster R-CNN head; the canvases know their objects' boxes and
classes, so regions here are the objects themselves and their text is the class name (a grounded,
stronger signal than noisy web captions). One level is pooled, the last map, because it is what the
image projection reads. The paper's shifted-window learning is for window-attention ViTs and is not used.
On data without boxes the region term is absent and DITO is CLIP. The run folder is CLIP's (text tower
+ image projection), so every image-text protocol evaluates it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from pretrainlab.backbones import Backbone
from pretrainlab.data.boxes import BOXES
from pretrainlab.data.synthetic_captions import with_article
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.clip import MAX_LOGIT_SCALE
from pretrainlab.methods.base import Batch, MethodContext, register_method
from pretrainlab.methods.clip import CLIP, CLIPConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DITOConfig(CLIPConfig):
    """CLIP's options, plus:
        region_weight: weight of the region-level loss beside the image-level one.
        min_visible: share of an object's box that must lie inside the view's crop for it to count.
    """

    region_weight: float = 1.0
    min_visible: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.region_weight < 0 or not 0 < self.min_visible <= 1:
            raise PretrainlabError(f"dito needs region_weight >= 0 and 0 < min_visible <= 1, got "
                                   f"region_weight={self.region_weight} min_visible={self.min_visible}")


def boxes_in_view(boxes: torch.Tensor, crops: torch.Tensor, flipped: torch.Tensor, image_size: tuple[int, int],
                  min_visible: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Object boxes (B, M, 5) (class + 1, x0, y0, x1, y1 in source pixels) seen through each view's crop.

    crops (B, 4): the views' crop boxes as fractions of the source; flipped (B,): mirrored views.
    Returns image index (R,), boxes (R, 4) as fractions of the view, class ids (R,) of the kept objects."""
    height, width = image_size
    objects = boxes[..., 1:].float() / boxes.new_tensor([width, height, width, height]).float()  # (B, M, 4)
    origin = crops[:, None, [0, 1, 0, 1]]  # (B, 1, 4)
    span = (crops[:, None, 2:] - crops[:, None, :2]).repeat(1, 1, 2)  # (B, 1, 4) crop (w, h, w, h)
    relative = (objects - origin) / span
    clipped = relative.clamp(0, 1)

    def area(box: torch.Tensor) -> torch.Tensor:
        return (box[..., 2] - box[..., 0]).clamp(min=0) * (box[..., 3] - box[..., 1]).clamp(min=0)

    keep = (boxes[..., 0] > 0) & (area(clipped) > 0) & (area(clipped) >= min_visible * area(relative))
    mirrored = torch.stack([1 - clipped[..., 2], clipped[..., 1], 1 - clipped[..., 0], clipped[..., 3]], -1)
    clipped = torch.where(flipped[:, None, None], mirrored, clipped)
    image_index = torch.arange(len(boxes), device=boxes.device)[:, None].expand_as(keep)
    return image_index[keep], clipped[keep], boxes[..., 0][keep].long() - 1


@register_method("dito")
class DITO(CLIP):
    """CLIP whose image projection also embeds RoI-Aligned object regions, contrasted with class-name texts."""

    config_class = DITOConfig

    def __init__(self, backbone: Backbone, config: DITOConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        self.region_texts = [with_article(name) for name in context.class_names]
        self._warned = False

    def region_loss(self, batch: Batch, scale: torch.Tensor) -> torch.Tensor | None:
        """Cross-entropy of every visible object region over the class names' text embeddings; None: no boxes."""
        if BOXES not in batch.extra:
            if not self._warned:
                log.warning("dito: the data has no object boxes, so only the image-level loss trains (CLIP)")
                self._warned = True
            return None
        if not self.region_texts:
            raise PretrainlabError("dito needs the class names of the boxes' classes; the data names none")
        view = batch.views["image"][0]
        images, regions, labels = boxes_in_view(batch.extra[BOXES], view.boxes, view.flipped,
                                                tuple(batch.images.shape[2:]), self.config.min_visible)
        maps = self.backbone.feature_maps(view.images)[-1].float()  # (B, C, h, w)
        if maps.shape[1] != self.image_projection.in_features:
            raise PretrainlabError(f"dito pools regions from the last feature map ({maps.shape[1]} channels) into the "
                                   f"image projection ({self.image_projection.in_features}); use a backbone whose "
                                   "pooled features come from its last map")
        size = maps.new_tensor([maps.shape[3], maps.shape[2]] * 2)  # fractions -> cells
        rois = torch.cat([images[:, None].float(), regions * size], 1)  # (R, 5)
        pooled = roi_align(maps, rois, output_size=2, spatial_scale=1.0, aligned=True).mean(dim=(2, 3))  # (R, C)
        embeddings = F.normalize(self.image_projection(pooled), dim=1)  # (R, E)
        texts = F.normalize(self.text(self.region_texts).float(), dim=1)  # (K, E)
        if len(labels) == 0:
            return embeddings.sum() * 0
        return F.cross_entropy(scale * embeddings @ texts.T, labels)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        outputs = super().forward(batch)
        region = self.region_loss(batch, self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE))
        if region is None:
            return outputs
        return {**outputs, "loss": outputs["loss"] + self.config.region_weight * region,
                "image_loss": outputs["loss"].detach(), "region_loss": region.detach()}

