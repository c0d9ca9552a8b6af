"""GPT4Image: align a vision backbone's features with frozen text embeddings of per-image descriptions.

Ding et al., "GPT4Image: Can Large Pre-trained Models Help Vision Models on Perception Tasks?",
arXiv 2306.00693. There, a multimodal LLM writes a description of every training image once; a frozen
pre-trained text encoder embeds the descriptions; during training a contrastive loss aligns a projection
of the vision model's features with those embeddings, added to the task's own loss.

Here the descriptions are the source's captions (`captions:PATH`, or the synthetic captions of
`captions:SPEC`, which stand in for the LLM's descriptions and say only what the annotations know), the
frozen encoder is all-MiniLM-L6-v2 (backbones/text/sentence_encoder.py, embeddings cached per text), and
the loss is the symmetric InfoNCE of losses/clip.py at a fixed temperature between an MLP projection of
the pooled backbone features and the text embeddings (identical descriptions are positives of each other).

Alone (`--method gpt4image`) it is language-supervised pre-training with a frozen text side; added to
any method through composition it is the paper's auxiliary loss:
`--method compose:simclr+gpt4image --option weights.gpt4image=0.5`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.text import TEXT_ENCODERS, create_text_encoder
from pretrainlab.data.captions import CAPTION_COUNTS, CAPTIONS, caption_ids, choose_captions
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads import ProjectionHead
from pretrainlab.losses.clip import CLIPLoss
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method


@dataclass(frozen=True)
class GPT4ImageConfig:
    """Args:
        text_encoder: the frozen encoder of the descriptions ("minilm").
        temperature: fixed softmax temperature of the alignment loss.
        hidden_dim: hidden width of the MLP that projects backbone features into the text space.
        crop_min_scale: random-resized-crop lower bound of the view (no flips: descriptions name sides).
        merge_equal_captions: images with identical descriptions are positives of each other.
    """

    text_encoder: str = "minilm"
    temperature: float = 0.1
    hidden_dim: int = 512
    crop_min_scale: float = 0.8
    merge_equal_captions: bool = True

    def __post_init__(self) -> None:
        TEXT_ENCODERS.get(self.text_encoder)
        if self.temperature <= 0:
            raise PretrainlabError(f"temperature must be > 0, got {self.temperature}")


@register_method("gpt4image")
class GPT4Image(Method):
    """An MLP maps pooled features into the frozen text space; InfoNCE against the descriptions' embeddings."""

    config_class = GPT4ImageConfig
    needs_captions = True
    example_options = {"hidden_dim": 32}

    def __init__(self, backbone: Backbone, config: GPT4ImageConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        self.text_encoder = create_text_encoder(config.text_encoder, context.captions)
        if getattr(self.text_encoder, "trainable", False):
            raise PretrainlabError(f"gpt4image aligns to a frozen pre-trained text encoder; '{config.text_encoder}' "
                                   "is trained from scratch (use minilm)")
        self.projection = ProjectionHead(backbone.embed_dim, config.hidden_dim, self.text_encoder.embed_dim, 2)
        self.criterion = CLIPLoss()

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"image": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), flip_p=0.0,
                                  jitter_p=0.0, grayscale_p=0.0)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if CAPTIONS not in batch.extra:
            raise PretrainlabError("gpt4image needs descriptions with every batch; use --data captions:PATH or "
                                   "captions:SPEC")
        texts = choose_captions(batch.extra[CAPTIONS], batch.extra[CAPTION_COUNTS], batch.generator)
        view = batch.views["image"][0].images  # (B, C, S, S)
        image = self.projection(self.backbone.pooled(view)).float()  # (B, 384)
        text = self.text_encoder.encode(texts, view.device)  # (B, 384), frozen
        ids = caption_ids(texts, view.device) if self.config.merge_equal_captions else None
        loss = self.criterion(image, text, torch.tensor(1 / self.config.temperature, device=view.device), ids)
        return {"loss": loss}
