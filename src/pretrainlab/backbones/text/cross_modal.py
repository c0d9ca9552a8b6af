"""UNITER's single-stream cross-modal transformer over [CLS ; image regions ; words], with its task heads.

Chen et al., "UNITER: UNiversal Image-TExt Representation Learning", arXiv 1909.11740, section 3.1: an
image embedder (region features and 7-d region locations, each through a linear layer and a layer norm,
summed), a text embedder (word + position embeddings, layer norm), a modality-type embedding, and one
bidirectional transformer over the concatenation, so every word attends to every region and back.
Regions here are the cells of the vision backbone's last feature map (optionally average-pooled to a
coarser grid), with the cell's box as location: no object detector on small images.

Heads: image-text matching (the paper's pooler, a tanh layer on the joint [CLS], then 2 logits) and
masked language modelling (a GELU layer and a layer norm, then logits over the word vocabulary).
Saved beside a run's backbone as `cross_modal.safetensors` (weights, the tokenizer and the options in
the metadata) so evaluation can score image-text pairs with the ITM head.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pretrainlab.atomic import atomic_path
from pretrainlab.backbones.text.tokenizer import PAD, Tokenizer, tokenizer_from_dict
from pretrainlab.backbones.text.transformer import trim_padding
from pretrainlab.errors import PretrainlabError

CROSS_MODAL_FILE = "cross_modal.safetensors"
CROSS_MODAL_FORMAT = "pretrainlab-cross-modal-1"
LOCATION_FEATURES = 7  # x1, y1, x2, y2, width, height, area (UNITER's region location)


def grid_locations(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """The boxes of a (height, width) grid of cells, row-major, in [0, 1] -> (height * width, 7)."""
    rows, columns = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                   indexing="ij")
    x1, y1 = columns.flatten().float() / width, rows.flatten().float() / height
    box_w, box_h = torch.full_like(x1, 1 / width), torch.full_like(y1, 1 / height)
    return torch.stack([x1, y1, x1 + box_w, y1 + box_h, box_w, box_h, box_w * box_h], dim=1)


class CrossModalModel(nn.Module):
    """Feature maps + word ids -> joint features; the ITM and MLM heads.

    Args:
        tokenizer: the word tokenizer of the training captions; id `vocab_size` is [MASK].
        image_channels: channels of the backbone's last feature map.
        width, depth, heads: the joint transformer.
        region_grid: average-pool the feature map to region_grid x region_grid cells (0: keep every cell).
    """

    def __init__(self, tokenizer: Tokenizer, image_channels: int, width: int = 64, depth: int = 2, heads: int = 4,
                 region_grid: int = 0) -> None:
        super().__init__()
        if width % heads:
            raise PretrainlabError(f"cross-modal width {width} must be divisible by heads {heads}")
        self.tokenizer = tokenizer
        self.options = {"image_channels": image_channels, "width": width, "depth": depth, "heads": heads,
                        "region_grid": region_grid}
        self.mask_id = tokenizer.vocab_size
        self.word_embedding = nn.Embedding(tokenizer.vocab_size + 1, width)
        self.word_position = nn.Parameter(torch.randn(tokenizer.max_length, width) * 0.01)
        self.word_norm = nn.LayerNorm(width)
        self.region_feature = nn.Sequential(nn.Linear(image_channels, width), nn.LayerNorm(width))
        self.region_location = nn.Sequential(nn.Linear(LOCATION_FEATURES, width), nn.LayerNorm(width))
        self.type_embedding = nn.Embedding(2, width)  # 0: text, 1: image
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(width)
        self.itm_head = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 2))
        self.mlm_head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width),
                                      nn.Linear(width, tokenizer.vocab_size))
        nn.init.normal_(self.word_embedding.weight, std=0.02)

    def embed_regions(self, maps: torch.Tensor) -> torch.Tensor:
        """maps (B, C, h, w) -> region embeddings (B, R, width), R = h * w (or region_grid ** 2)."""
        grid = self.options["region_grid"]
        if grid:
            maps = F.adaptive_avg_pool2d(maps, grid)
        features = maps.flatten(2).transpose(1, 2)  # (B, R, C)
        locations = grid_locations(maps.shape[2], maps.shape[3], maps.device).to(features.dtype)  # (R, 7)
        return self.region_feature(features) + self.region_location(locations) + self.type_embedding.weight[1]

    def tokenize(self, texts: list[str], device: torch.device) -> torch.Tensor:
        """texts -> ids (B, L) on `device`, padding columns shared by every row dropped."""
        return trim_padding(self.tokenizer.encode(texts)).to(device)

    def forward(self, regions: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """regions (B, R, width) from `embed_regions`, ids (B, L) -> joint [CLS] (B, width), regions
        (B, R, width) and words (B, L, width), all after the transformer."""
        words = self.word_norm(self.word_embedding(ids) + self.word_position[: ids.shape[1]])
        words = words + self.type_embedding.weight[0]  # (B, L, width)
        batch, count = regions.shape[:2]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), regions, words], dim=1)  # (B, 1 + R + L, width)
        padding = torch.cat([torch.zeros(batch, 1 + count, dtype=torch.bool, device=ids.device), ids == PAD], dim=1)
        for block in self.blocks:
            x = block(x, src_key_padding_mask=padding)
        x = self.final_norm(x)
        return x[:, 0], x[:, 1 : 1 + count], x[:, 1 + count :]

    @torch.no_grad()
    def match_scores(self, maps: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """maps (B, C, h, w), B texts -> ITM log-odds (B,) that each text describes its image."""
        ids = self.tokenize(texts, maps.device)
        logits = self.itm_head(self(self.embed_regions(maps), ids)[0]).float()  # (B, 2)
        return logits[:, 1] - logits[:, 0]

    def describe(self) -> dict[str, Any]:
        return {"options": self.options, "tokenizer": self.tokenizer.to_dict()}


def save_cross_modal(path: Path, model: CrossModalModel, metadata: dict[str, Any] | None = None) -> None:
    """Writes the model's weights and its description (tokenizer, options) as one safetensors file."""
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    values = {"format": CROSS_MODAL_FORMAT, "model": json.dumps(model.describe()),
              **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=values)


def load_cross_modal(path: Path) -> CrossModalModel:
    """The model of a `save_cross_modal` file, in eval mode."""
    if not path.is_file():
        raise PretrainlabError(f"{path} not found: only image-text matching runs (--method uniter) have one")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != CROSS_MODAL_FORMAT:
        raise PretrainlabError(f"{path} is not a pretrainlab cross-modal model")
    description = json.loads(metadata["model"])
    model = CrossModalModel(tokenizer_from_dict(description["tokenizer"]), **description["options"])
    model.load_state_dict(load_file(str(path)))
    return model.eval()
