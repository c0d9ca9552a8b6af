"""CLIP: contrastive pre-training of an image encoder and a text encoder on image-caption pairs.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", arXiv 2103.00020.

Each step takes a batch of images and one of each image's captions (drawn anew every step when an image
has several); the image backbone's pooled features and the text encoder's end-of-text features are
linearly projected into one joint space, and the symmetric InfoNCE loss (losses/clip.py) with a learned
temperature makes every image pick its own caption among the batch's and every caption its own image.

Text encoders (`--option text_encoder=...`): `transformer`, a small causal text transformer trained
from scratch with a tokenizer built from the training captions (the paper's design, scaled down); or
`minilm`, the frozen all-MiniLM-L6-v2 sentence encoder with a trained projection (a locked text tower,
as LiT, arXiv 2111.07991, locks the image side instead).

Views: mild crops only, no flips and no colour changes, since captions may name positions ("on the
left") and colours. The run folder gets `text_tower.safetensors` (text encoder + both projections +
temperature, the tokenizer in its metadata) and `tokenizer.json` beside `backbone.safetensors`;
`pretrainlab eval RUN --protocol zero_shot,image_text_retrieval` uses them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.text import TEXT_ENCODERS, TransformerTextEncoder, create_text_encoder
from pretrainlab.backbones.text.tower import TOWER_FILE, TextTower, save_text_tower
from pretrainlab.data.captions import CAPTION_COUNTS, CAPTIONS, caption_ids, choose_captions
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.clip import MAX_LOGIT_SCALE, CLIPLoss
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class CLIPConfig:
    """Args:
        embed_dim: size of the joint image-text space (512 for the paper's ResNet-50).
        text_encoder: "transformer" (trained from scratch) or "minilm" (frozen sentence encoder).
        tokenizer: "word" or "byte", for the transformer text encoder.
        max_length: tokens per caption, BOS and EOS included (76 + 1 in the paper).
        text_width, text_depth, text_heads: the text transformer (512 / 12 / 8 in the paper).
        text_pooling: "eos" (the paper: features at the end-of-text token) or "mean" (over the caption's tokens).
        initial_temperature: softmax temperature at the start (0.07 in the paper); learned unless
            `learn_temperature` is False.
        crop_min_scale: random-resized-crop lower bound of the image view.
        merge_equal_captions: pairs whose captions are identical count as positives of each other.
    """

    embed_dim: int = 128
    text_encoder: str = "transformer"
    tokenizer: str = "word"
    max_length: int = 32
    text_width: int = 128
    text_depth: int = 2
    text_heads: int = 4
    text_pooling: str = "eos"
    initial_temperature: float = 0.07
    learn_temperature: bool = True
    crop_min_scale: float = 0.8
    merge_equal_captions: bool = True

    def __post_init__(self) -> None:
        TEXT_ENCODERS.get(self.text_encoder)  # an unknown name fails before any data is loaded
        if not 0 < self.initial_temperature < 1:
            raise PretrainlabError(f"initial_temperature must be in (0, 1), got {self.initial_temperature}")

    def text_options(self) -> dict:
        if self.text_encoder != "transformer":
            return {}
        return {"tokenizer": self.tokenizer, "max_length": self.max_length, "width": self.text_width,
                "depth": self.text_depth, "heads": self.text_heads, "pooling": self.text_pooling}


@register_method("clip")
class CLIP(Method):
    """Image backbone + linear projection; text encoder + linear projection; learned temperature."""

    config_class = CLIPConfig
    needs_captions = True
    example_options = {"embed_dim": 16, "text_width": 16, "text_depth": 1, "text_heads": 2, "max_length": 16}

    def __init__(self, backbone: Backbone, config: CLIPConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        encoder = create_text_encoder(config.text_encoder, context.captions, config.text_options())
        self.text = TextTower(encoder, config.embed_dim)
        self.image_projection = nn.Linear(backbone.embed_dim, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.initial_temperature)),
                                        requires_grad=config.learn_temperature)
        self.criterion = CLIPLoss()

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"image": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), flip_p=0.0,
                                  jitter_p=0.0, grayscale_p=0.0)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if CAPTIONS not in batch.extra:
            raise PretrainlabError("clip needs captions with every batch; use --data captions:PATH or captions:SPEC")
        texts = choose_captions(batch.extra[CAPTIONS], batch.extra[CAPTION_COUNTS], batch.generator)
        view = batch.views["image"][0].images  # (B, C, S, S)
        image = self.image_projection(self.backbone.pooled(view))  # (B, E)
        text = self.text(texts)  # (B, E)
        scale = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        ids = caption_ids(texts, view.device) if self.config.merge_equal_captions else None
        loss = self.criterion(image.float(), text.float(), scale, ids)
        return {"loss": loss, "temperature": 1 / scale.detach()}

    def excluded_from_weight_decay(self, name: str, parameter: nn.Parameter) -> bool:
        return name == "logit_scale" or "embedding" in name or super().excluded_from_weight_decay(name, parameter)

    def save_artifacts(self, run_dir: Path) -> None:
        save_text_tower(run_dir / TOWER_FILE, self.text,
                        {"image_projection.weight": self.image_projection.weight, "logit_scale": self.logit_scale},
                        {"method": self.name})
        if isinstance(self.text.encoder, TransformerTextEncoder):  # the frozen encoder brings its own tokenizer
            (run_dir / TOKENIZER_FILE).write_text(json.dumps(self.text.encoder.tokenizer.to_dict(), indent=1))
