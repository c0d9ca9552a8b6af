"""The text side of an image-text model: a text encoder and its projection into the joint space.

Saved beside a run's `backbone.safetensors` as `text_tower.safetensors`: the tower's tensors under
`text.` (the encoder's own weights when it is trained, always the projection), the image-side tensors
the joint space also needs (e.g. CLIP's `image_projection.weight`, `logit_scale`) under their names,
and in the metadata the encoder's description (name, options, tokenizer vocabulary) to rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pretrainlab.atomic import atomic_path
from pretrainlab.backbones.text import TextEncoder, text_encoder_from_description
from pretrainlab.errors import PretrainlabError

TOWER_FILE = "text_tower.safetensors"
TOWER_FORMAT = "pretrainlab-text-tower-1"
TEXT_PREFIX = "text."


class TextTower(nn.Module):
    """texts -> (B, embed_dim) unnormalised joint-space embeddings: encoder, then a linear projection."""

    def __init__(self, encoder: TextEncoder, embed_dim: int) -> None:
        super().__init__()
        self.encoder = encoder  # an nn.Module (registered, trained) or the frozen sentence encoder (plain object)
        self.projection = nn.Linear(encoder.embed_dim, embed_dim, bias=False)
        self.embed_dim = embed_dim

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = self.projection.weight.device
        return self.projection(self.encoder.encode(texts, device).to(self.projection.weight.dtype))


def save_text_tower(path: Path, tower: TextTower, extra: dict[str, torch.Tensor],
                    metadata: dict[str, Any] | None = None) -> None:
    """Writes the tower, the `extra` image-side tensors and the encoder's description as one safetensors."""
    state = {TEXT_PREFIX + key: value.detach().contiguous().cpu() for key, value in tower.state_dict().items()}
    state.update({key: value.detach().contiguous().cpu() for key, value in extra.items()})
    values = {"format": TOWER_FORMAT, "encoder": json.dumps(tower.encoder.describe()),
              "embed_dim": str(tower.embed_dim), **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=values)


def load_text_tower(path: Path) -> tuple[TextTower, dict[str, torch.Tensor], dict[str, Any]]:
    """(tower in eval mode, the image-side tensors, the extra metadata) from a `save_text_tower` file."""
    if not path.is_file():
        raise PretrainlabError(f"{path} not found: only image-text runs (e.g. --method clip) have a text tower")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != TOWER_FORMAT:
        raise PretrainlabError(f"{path} is not a pretrainlab text tower")
    tower = TextTower(text_encoder_from_description(json.loads(metadata["encoder"])), int(metadata["embed_dim"]))
    tensors = load_file(str(path))
    tower.load_state_dict({k.removeprefix(TEXT_PREFIX): v for k, v in tensors.items() if k.startswith(TEXT_PREFIX)})
    extra = {k: v for k, v in tensors.items() if not k.startswith(TEXT_PREFIX)}
    info = {k: json.loads(v) for k, v in metadata.items() if k not in ("format", "encoder", "embed_dim")}
    return tower.eval(), extra, info
