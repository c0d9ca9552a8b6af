"""Selected representations of a backbone, each usable wherever a `Backbone` is.

- `NestedBackbone`: the first `dim` pooled features, optionally computed after only the first `depth`
  transformer blocks (Matryoshka embeddings; 2D Matryoshka / Starbucks, arXiv 2410.13230).
- `HeadBackbone`: the backbone followed by the first layers of a projection head (SimCLRv2's
  "fine-tune from a middle layer", arXiv 2006.10029; arXiv 2403.11391 compares every layer).

Both subclass `Backbone` and keep the timm model as `model`, so `feature_maps`, `patch_size` and
friends keep working; only `pooled` (and `tokens` for a nested depth) change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from pretrainlab.backbones.adapter import Backbone
from pretrainlab.backbones.vit_parts import patch_embed_with_pos, prefix_tokens
from pretrainlab.errors import PretrainlabError

FULL_DEPTH = -1  # "after the last block": the backbone's own pooled output, for any architecture


def num_blocks(backbone: Backbone) -> int:
    """Transformer blocks of `backbone` (0 for a convolutional network)."""
    return len(backbone.model.blocks) if backbone.has_tokens else 0


def encode_by_depth(model: nn.Module, patch_tokens: torch.Tensor, depths: Sequence[int]) -> dict[int, torch.Tensor]:
    """Patch tokens with positions (B, K, D) -> {depth: (B, P + K, D)}: prefix tokens prepended, the first
    `depth` blocks run (one pass for all depths), then the final norm. `depths` count blocks from 1."""
    tokens = torch.cat([prefix_tokens(model, patch_tokens.shape[0]), patch_tokens], dim=1)
    tokens = model.norm_pre(getattr(model, "patch_drop", nn.Identity())(model.pos_drop(tokens)))  # (B, P + K, D)
    wanted = set(depths)
    outputs = {}
    for index, block in enumerate(model.blocks[: max(wanted)], start=1):
        tokens = block(tokens)
        if index in wanted:
            # The final norm is applied to every depth so an early exit looks like the full model's output.
            outputs[index] = model.norm(tokens)
    return outputs


def _tokens_by_depth(model: nn.Module, x: torch.Tensor, depths: Sequence[int]) -> dict[int, torch.Tensor]:
    """(B, C, H, W) -> {depth: (B, P + N, D)}."""
    return encode_by_depth(model, patch_embed_with_pos(model, x), depths)


def pooled_at_depths(model: nn.Module, x: torch.Tensor, depths: Sequence[int]) -> dict[int, torch.Tensor]:
    """(B, C, H, W) -> {depth: (B, D)}: the model's own pooling after each depth (FULL_DEPTH: the whole model).

    A depth L of a transformer means its first L blocks, then the final norm and the model's pooling
    (mean of patch tokens or class token, and `fc_norm`), so depth = number of blocks equals FULL_DEPTH.
    """
    partial = [depth for depth in depths if depth != FULL_DEPTH]
    if not partial:
        return {FULL_DEPTH: model.forward_head(model.forward_features(x), pre_logits=True)}
    blocks = len(model.blocks)
    wanted = partial + ([blocks] if FULL_DEPTH in depths else [])
    tokens = _tokens_by_depth(model, x, wanted)  # one pass serves every depth, the full one included
    outputs = {depth: model.forward_head(tokens[depth], pre_logits=True) for depth in partial}
    if FULL_DEPTH in depths:
        outputs[FULL_DEPTH] = model.forward_head(tokens[blocks], pre_logits=True)
    return outputs


class ForwardCache:
    """Shares one backbone pass between nested views that see the same images within one training step.

    Only active inside `session()`, so stale features can never outlive the step that computed them.
    Entries match on the input's content (views are concatenated afresh by each consumer) and on the
    grad and train modes.
    """

    def __init__(self, depths: Sequence[int]) -> None:
        self.depths = sorted(set(depths))
        self.active = False
        self.entries: list[tuple[tuple, torch.Tensor, dict[int, torch.Tensor]]] = []

    def features(self, model: nn.Module, x: torch.Tensor) -> dict[int, torch.Tensor]:
        key = (id(model), torch.is_grad_enabled(), model.training, x.shape, x.dtype, x.device)
        if self.active:
            for entry_key, inputs, features in self.entries:
                if entry_key == key and torch.equal(inputs, x):
                    return features
        features = pooled_at_depths(model, x, self.depths)
        if self.active:
            self.entries.append((key, x.detach(), features))
        return features

    def first_entry(self) -> dict[int, torch.Tensor] | None:
        """The features of the first images seen in this session (the main views of the step)."""
        return self.entries[0][2] if self.entries else None

    @contextmanager
    def session(self) -> Iterator[ForwardCache]:
        self.active = True
        try:
            yield self
        finally:
            self.active = False
            self.entries.clear()

    def __deepcopy__(self, memo: dict) -> ForwardCache:
        return ForwardCache(self.depths)  # a copied network (an EMA teacher) must never read this one's features


class NestedBackbone(Backbone):
    """The first `dim` features of the pooled output after `depth` transformer blocks.

    Args:
        backbone: the full backbone (its timm model is shared, not copied).
        depth: 1..blocks for a transformer, or FULL_DEPTH (-1) for the whole network (any architecture).
        dim: 1..embed_dim, or -1 for all features.
        cache: shared between the nested views of one model during a training step (Matryoshka losses).
    """

    def __init__(self, backbone: Backbone, depth: int = FULL_DEPTH, dim: int = -1,
                 cache: ForwardCache | None = None) -> None:
        super().__init__(backbone.model, backbone.name, backbone.create_kwargs)
        full_dim, blocks = backbone.embed_dim, num_blocks(backbone)
        if depth != FULL_DEPTH and not backbone.has_tokens:
            raise PretrainlabError(
                f"backbone '{backbone.name}' is convolutional: nested depths need a vision transformer; "
                f"use layer {FULL_DEPTH} (the full network) or a ViT such as vit_nano_patch4")
        if depth != FULL_DEPTH and not 1 <= depth <= blocks:
            raise PretrainlabError(f"layer {depth} is out of range: '{backbone.name}' has blocks 1 to {blocks}")
        if dim != -1 and not 1 <= dim <= full_dim:
            raise PretrainlabError(f"dim {dim} is out of range: '{backbone.name}' has 1 to {full_dim} features")
        self.depth = FULL_DEPTH if depth == blocks else depth
        self.full_embed_dim = full_dim
        self.embed_dim = full_dim if dim == -1 else dim
        self.cache = cache

    @property
    def selector(self) -> str:
        """The name of this view in `RUN@SELECTOR` specs, e.g. "dim64" or "layer2,dim64"."""
        layer = "" if self.depth == FULL_DEPTH else f"layer{self.depth},"
        return f"{layer}dim{self.embed_dim}"

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, dim)."""
        if self.cache is not None:
            features = self.cache.features(self.model, x)
        else:
            features = pooled_at_depths(self.model, x, [self.depth])
        return features[self.depth][:, : self.embed_dim]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, dim): tokens after `depth` blocks and the final norm, first `dim` channels."""
        if self.depth == FULL_DEPTH:
            return super().tokens(x)[..., : self.embed_dim]
        if not self.has_tokens:
            raise TypeError(f"backbone '{self.name}' is convolutional and has no tokens")
        return _tokens_by_depth(self.model, x, [self.depth])[self.depth][..., : self.embed_dim]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise TypeError(f"the nested view {self.selector} of '{self.name}' is a pooled embedding and has no "
                        "feature maps; evaluate the run folder itself for dense protocols")


class HeadBackbone(Backbone):
    """A backbone followed by the first layers of a projection head: `pooled` = head_prefix(backbone.pooled).

    Args:
        backbone: the backbone (its timm model is shared).
        head: the head layers to keep (e.g. `ProjectionHead.prefix(0)`), a module (B, D) -> (B, D').
        out_dim: the width of the head's output.
        selector: its name, e.g. "head.0".
    """

    def __init__(self, backbone: Backbone, head: nn.Module, out_dim: int, selector: str) -> None:
        super().__init__(backbone.model, backbone.name, backbone.create_kwargs)
        self.head = head
        self.embed_dim = out_dim
        self.selector = selector

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, out_dim). The head's BatchNorm uses running statistics in eval mode."""
        return self.head(super().pooled(x))
