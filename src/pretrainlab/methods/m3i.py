"""M3I: all-in-one pre-training by maximising one mutual-information bound towards every target the data has.

Su et al., "Towards All-in-one Pre-training via Maximizing Multi-modal Mutual Information", arXiv 2211.09807.
The paper's unified objective: pre-training maximises I(z_x; z_y) between the input's representation and a
target representation, through the lower bound E[log P_hat(z_y | decoder(z_x))] (losses/mutual_information.py);
supervised, weakly supervised and self-supervised pre-training differ only in the target. M3I trains one
input against all targets at once, in a single stage:
    max sum_t lambda_t E[log P_hat(z_t | decoder_t(z_x))],   t in {view, label, caption}
- view (self-supervised): z_t is another augmented view of the same image, encoded by a momentum (EMA) target
  encoder; the candidates are the batch's target views;
- label (supervised): z_t is a learned embedding of the image's class; the candidates are all class embeddings;
- caption (weakly supervised): z_t is the caption's embedding by a text encoder (backbones/text/, the frozen
  offline all-MiniLM-L6-v2 by default) and a trained projection; the candidates are the batch's captions.
All targets share one estimator (cosine similarity, one temperature) and one input: each of the two views
is an input predicting the other view, the label and the caption, which is what separates M3I from a
weighted sum of separately designed losses (`compose:simclr+supervised`).

`--option targets=auto` (default) uses every target the batch carries (labels, captions); naming targets
(`targets=view+label+caption`) requires each of them and stops with a one-line error where one is absent.
Left out at this scale: the paper's mixing of two images into one input and its dense (per-patch) image
targets with a decoder; here the image target is the pooled feature of the other view, as in MoCo v3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.text import TEXT_ENCODERS, create_text_encoder
from pretrainlab.backbones.text.tower import TextTower
from pretrainlab.data.captions import CAPTION_COUNTS, CAPTIONS, caption_ids, choose_captions
from pretrainlab.data.views import ViewSpec
from pretrainlab.distributed import gather_no_grad, rank
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses.mutual_information import negative_mutual_information_bound
from pretrainlab.methods.base import Batch, Method, MethodContext, ViewOptions, register_method
from pretrainlab.methods.parts.momentum import MomentumTeacher

TARGETS = ("view", "label", "caption")


@dataclass(frozen=True)
class M3IConfig:
    """Args:
        targets: "auto" (every target the data has) or targets joined by "+", from view, label, caption.
        view_weight, label_weight, caption_weight: lambda_t of each target's bound (1 each in the paper's sum).
        temperature: tau of the shared Boltzmann estimator, the same for every target.
        embed_dim: size of the joint target space.
        hidden_dim: hidden width of the projection and of the view predictor.
        momentum: base momentum of the target encoder, raised to 1 on a cosine schedule.
        text_encoder: the caption encoder: "minilm" (frozen, offline) or "transformer" (trained from scratch).
    """

    targets: str = "auto"
    view_weight: float = 1.0
    label_weight: float = 1.0
    caption_weight: float = 1.0
    temperature: float = 0.2
    embed_dim: int = 128
    hidden_dim: int = 512
    momentum: float = 0.99
    text_encoder: str = "minilm"
    views: ViewOptions = field(default_factory=ViewOptions)

    def __post_init__(self) -> None:
        named = self.targets.split("+")
        if self.targets != "auto" and (not set(named) <= set(TARGETS) or len(set(named)) != len(named)):
            raise PretrainlabError(f"targets must be 'auto' or distinct names joined by '+' from {', '.join(TARGETS)}"
                                   f" (e.g. view+label+caption), got {self.targets!r}")
        if min(self.view_weight, self.label_weight, self.caption_weight) < 0:
            raise PretrainlabError("view_weight, label_weight and caption_weight must be >= 0")
        if self.temperature <= 0 or not 0 <= self.momentum <= 1:
            raise PretrainlabError(f"need temperature > 0 and 0 <= momentum <= 1, got {self.temperature}, "
                                   f"{self.momentum}")
        TEXT_ENCODERS.get(self.text_encoder)


@register_method("m3i")
class M3I(Method):
    """Online backbone + projection + one decoder per target; EMA target encoder for the view target."""

    config_class = M3IConfig
    example_options = {"embed_dim": 16, "hidden_dim": 32, "text_encoder": "transformer"}

    def __init__(self, backbone: Backbone, config: M3IConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        self.required = () if config.targets == "auto" else tuple(config.targets.split("+"))
        self.check_targets_available(context)
        use_labels = "label" in self.required or (config.targets == "auto" and context.num_classes >= 2)
        use_captions = "caption" in self.required or (config.targets == "auto" and bool(context.captions))
        width, dim = config.hidden_dim, config.embed_dim
        self.projection = ProjectionHead(backbone.embed_dim, width, dim)  # z_x -> the joint space
        self.view_predictor = ProjectionHead(dim, width, dim)
        self.target_encoder = MomentumTeacher(self.online_encoder(), config.momentum)
        self.label_decoder = nn.Linear(dim, dim) if use_labels else None
        self.class_embeddings = nn.Parameter(torch.randn(context.num_classes, dim) * 0.02) if use_labels else None
        self.caption_decoder = nn.Linear(dim, dim) if use_captions else None
        self.text = (TextTower(create_text_encoder(config.text_encoder, context.captions), dim)
                     if use_captions else None)

    def check_targets_available(self, context: MethodContext) -> None:
        """Named targets the data cannot give stop here, before training, with what would work."""
        if "label" in self.required and context.num_classes < 2:
            raise PretrainlabError("m3i target 'label' needs a labelled dataset; use labelled --data or drop it "
                                   "from --option targets (e.g. targets=view)")
        if "caption" in self.required and not context.captions:
            raise PretrainlabError("m3i target 'caption' needs image-caption pairs; use --data captions:PATH or "
                                   "captions:SPEC, or drop it from --option targets (e.g. targets=view+label)")

    def online_encoder(self) -> nn.ModuleDict:
        return nn.ModuleDict({"backbone": self.backbone, "projection": self.projection})

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"global": self.config.views.spec(self.context.img_size, count=2)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        view_a, view_b = batch.views["global"]
        both = torch.cat([view_a.images, view_b.images])  # one pass: (2B, C, S, S)
        joint = self.projection(self.backbone.pooled(both))  # (2B, E): both views are inputs
        terms = {"view": self.view_term(joint, both)}
        if self.label_decoder is not None and (batch.labels is not None or "label" in self.required):
            terms["label"] = self.label_term(joint, batch)
        if self.text is not None and (CAPTIONS in batch.extra or "caption" in self.required):
            terms["caption"] = self.caption_term(joint, batch)
        weights = {"view": self.config.view_weight, "label": self.config.label_weight,
                   "caption": self.config.caption_weight}
        loss = sum(weights[name] * term for name, term in terms.items())
        return {"loss": loss, **{f"{name}_loss": term.detach() for name, term in terms.items()}}

    def view_term(self, joint: torch.Tensor, both: torch.Tensor) -> torch.Tensor:
        """Each view predicts the other view's target representation, among the (global) batch's."""
        with torch.no_grad():
            encoder = self.target_encoder
            targets = encoder["projection"](encoder["backbone"].pooled(both))  # (2B, E)
        predictions = self.view_predictor(joint)  # (2B, E)
        target_a, target_b = targets.chunk(2)
        prediction_a, prediction_b = predictions.chunk(2)
        return (self.other_view_bound(prediction_a, target_b) + self.other_view_bound(prediction_b, target_a)) / 2

    def other_view_bound(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        candidates = gather_no_grad(targets)  # (W * B, E): every rank's targets are candidates
        own = torch.arange(len(predictions), device=predictions.device) + rank() * len(predictions)
        positives = F.one_hot(own, len(candidates)).bool()  # (B, W * B)
        return negative_mutual_information_bound(predictions, candidates, positives, self.config.temperature)

    def label_term(self, joint: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Supervised as MI: the class embeddings are the candidate targets (cross-entropy over classes)."""
        if batch.labels is None:
            raise PretrainlabError("m3i target 'label' got a batch without labels; use a labelled dataset")
        labels = batch.labels.repeat(2)  # (2B,): both views carry the image's label
        positives = F.one_hot(labels, len(self.class_embeddings)).bool()  # (2B, C)
        return negative_mutual_information_bound(self.label_decoder(joint), self.class_embeddings, positives,
                                                 self.config.temperature)

    def caption_term(self, joint: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Weak supervision as MI: the batch's caption embeddings are the candidates (equal captions all count)."""
        if CAPTIONS not in batch.extra:
            raise PretrainlabError("m3i target 'caption' got a batch without captions; use --data captions:...")
        texts = choose_captions(batch.extra[CAPTIONS], batch.extra[CAPTION_COUNTS], batch.generator)
        captions = self.text(texts).float()  # (B, E)
        ids = caption_ids(texts, joint.device)
        positives = (ids[:, None] == ids[None, :]).repeat(2, 1)  # (2B, B)
        return negative_mutual_information_bound(self.caption_decoder(joint), captions, positives,
                                                 self.config.temperature)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.target_encoder.follow(self.online_encoder(), step, total_steps)
