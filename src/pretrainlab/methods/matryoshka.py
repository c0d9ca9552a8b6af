"""Matryoshka embeddings with the Starbucks recipe: one backbone trained at a fixed list of (layer, dim) sizes.

Zhuang, Wang, Koopman, Zuccon, "Starbucks: Improved Training for 2D Matryoshka Embeddings", arXiv 2410.13230,
building on Matryoshka Representation Learning (Kusupati et al., arXiv 2205.13147) and 2D Matryoshka
sentence embeddings. Starbucks' findings, kept here:
- a fixed list of (layer, dim) pairs from small to large, every pair's loss computed at every step (not a
  randomly sampled sub-network): L = sum_i w_i * loss(v_i), v_i = the first dim_i pooled features after
  layer_i (section 3.1; the paper's pairs are (2, 32), (4, 64), ..., (12, 768) for BERT-base);
- a KL term pulling each smaller pair's in-batch score distribution towards the largest pair's;
- masked-autoencoding pre-training over the same pairs (SMAE, section 3.2): `masked_weight`, ViTs only.
The in-batch contrastive loss of the paper's fine-tuning is here any registered method computed from
`backbone.pooled` (SimCLR by default): each pair gets its own instance of the base method (its own heads)
whose backbone is the nested view of the shared one, so the smallest sizes must carry the information.
One backbone pass serves every pair (`ForwardCache`). Evaluate a size with `RUN@dim32` or `RUN@layer2,dim32`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.selected import FULL_DEPTH, ForwardCache, NestedBackbone, pooled_at_depths
from pretrainlab.config import build_config
from pretrainlab.data.views import ViewSpec, make_views
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.similarity_kl import similarity_kl
from pretrainlab.methods.base import METHODS, Batch, Method, MethodContext, register_method
from pretrainlab.methods.parts.starbucks_mae import NestedMaskedAutoencoding


@dataclass(frozen=True)
class MatryoshkaConfig:
    """Args:
        base: the registered method trained at every pair; its loss must come from `backbone.pooled`.
        base_options: the base method's options (as in its recipe's method_options), shared by every pair.
        pairs: (layer, dim) from small to large; layer counts transformer blocks from 1, -1 is the whole
            network (the only choice for a CNN); dim -1 is every feature. The last pair is the KL target.
        weights: one per pair; empty means 1 / len(pairs) each, so the total keeps the base loss's scale.
        kl_weight: Starbucks' KL term between each pair's and the last pair's in-batch similarity distribution.
        kl_temperature: softmax temperature of those distributions (cosine similarities).
        masked_weight: weight of the SMAE masked-autoencoding term over the pairs (0: off; ViTs only).
        mask_ratio, decoder_dim, decoder_depth, decoder_heads: that term's masking and shared light decoder.
    """

    base: str = "simclr"
    base_options: dict[str, Any] = field(default_factory=dict)
    pairs: tuple[tuple[int, int], ...] = ((-1, 16), (-1, 32), (-1, 64), (-1, -1))
    weights: tuple[float, ...] = ()
    kl_weight: float = 1.0
    kl_temperature: float = 0.3
    masked_weight: float = 0.0
    mask_ratio: float = 0.75
    decoder_dim: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 4

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError("pairs must list at least one [layer, dim] pair")
        for pair in self.pairs:
            if len(pair) != 2 or any(value == 0 or value < -1 for value in pair):
                raise ValueError(f"each pair is [layer, dim] with values >= 1 or -1 (all), got {list(pair)}")
        if len(set(self.pairs)) != len(self.pairs):
            raise ValueError(f"pairs must be distinct, got {[list(p) for p in self.pairs]}")
        if self.weights and len(self.weights) != len(self.pairs):
            raise ValueError(f"weights needs one value per pair ({len(self.pairs)}), got {len(self.weights)}")
        if self.kl_weight < 0 or self.masked_weight < 0 or self.kl_temperature <= 0:
            raise ValueError("kl_weight and masked_weight must be >= 0, kl_temperature > 0")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")


@register_method("matryoshka")
class Matryoshka(Method):
    """Sum over (layer, dim) pairs of the base method's loss on the nested embedding, plus Starbucks' KL and SMAE."""

    config_class = MatryoshkaConfig
    example_options: ClassVar[dict[str, Any]] = {
        "base_options": {"hidden_dim": 32, "projection_dim": 16}, "pairs": [[-1, 8], [-1, 32], [-1, -1]],
    }

    def __init__(self, backbone: Backbone, config: MatryoshkaConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        base_class = METHODS.get(config.base)
        if issubclass(base_class, Matryoshka):
            raise PretrainlabError("matryoshka cannot wrap itself; choose a base such as simclr or simclrv2")
        if base_class.needs_tokens:  # masked image modelling reads the ViT's internals, not the nested embedding
            raise PretrainlabError(
                f"matryoshka's base must compute its loss from the pooled embedding; '{config.base}' works on "
                "transformer tokens. For Starbucks' masked autoencoding use a contrastive base with masked_weight > 0")
        base_config = build_config(base_class.config_class, config.base_options, f"matryoshka base '{config.base}'")
        self.cache = ForwardCache([])
        views = [NestedBackbone(backbone, layer, dim, self.cache) for layer, dim in config.pairs]
        self.cache.depths = sorted({view.depth for view in views})
        self.pair_names = [view.selector for view in views]
        if len(set(self.pair_names)) != len(views):
            raise PretrainlabError(f"pairs {[list(p) for p in config.pairs]} name the same size twice on "
                                   f"'{backbone.name}' ({', '.join(self.pair_names)})")
        self.pair_sizes = [(view.depth, view.embed_dim) for view in views]
        self.weights = list(config.weights) or [1.0 / len(views)] * len(views)
        self.bases = nn.ModuleList(base_class(view, base_config, context) for view in views)
        self.masked = None
        if config.masked_weight > 0:
            self.masked = NestedMaskedAutoencoding(backbone, self.pair_sizes, context.in_chans, config.mask_ratio,
                                                   config.decoder_dim, config.decoder_depth, config.decoder_heads)

    def view_specs(self) -> dict[str, ViewSpec]:
        specs = dict(self.bases[0].view_specs())
        if self.masked is not None:  # MAE's views: a milder crop, no colour changes
            specs["masked"] = ViewSpec(self.context.img_size, crop_scale=(0.2, 1.0), jitter_p=0.0, grayscale_p=0.0)
        return specs

    @torch.no_grad()
    def prepare_batch(self, images_uint8: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> Batch:
        """The base method's views (every pair sees the same ones), plus MAE's view when SMAE is on."""
        batch = self.bases[0].prepare_batch(images_uint8, labels, generator)
        if self.masked is not None:
            spec = self.view_specs()["masked"]
            batch.views["masked"] = [make_views(batch.images, spec, generator, self.mean, self.std)]
        return batch

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=batch.images.device)
        with self.cache.session():
            pair_losses = [base(batch)["loss"] for base in self.bases]
            features = self.cache.first_entry()  # {depth: (N, D)} of the first images the bases embedded
            if features is None:
                raise PretrainlabError(f"matryoshka needs a base method whose loss comes from backbone.pooled; "
                                       f"'{self.config.base}' never called it (try simclr, simclrv2, byol, vicreg)")
            alignments = self.similarity_alignments(features)
        for name, weight, loss, alignment in zip(self.pair_names, self.weights, pair_losses, alignments, strict=True):
            total = total + weight * (loss + self.config.kl_weight * alignment)
            outputs[f"loss_{name}"] = loss.detach()
        if self.config.kl_weight > 0 and len(alignments) > 1:
            outputs["kl"] = torch.stack(alignments[:-1]).mean().detach()
        if self.masked is not None:
            masked = self.masked(self.backbone, batch.views["masked"][0].images, batch.generator)
            total = total + self.config.masked_weight * masked
            outputs["masked"] = masked.detach()
        outputs["loss"] = total
        return outputs

    def similarity_alignments(self, features: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        """Starbucks' KL term per pair (0 for the last pair, the target): [scalar] in pair order."""
        zero = next(iter(features.values())).new_zeros(())
        if self.config.kl_weight == 0:
            return [zero] * len(self.pair_sizes)
        last_depth, last_dim = self.pair_sizes[-1]
        target = features[last_depth][:, :last_dim]  # (N, D_last)
        alignments = [similarity_kl(features[depth][:, :dim], target, self.config.kl_temperature)
                      for depth, dim in self.pair_sizes[:-1]]
        return [*alignments, zero]

    def representations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """"backbone" and every trained size by its selector name ("dim32", "layer2,dim64")."""
        features = pooled_at_depths(self.backbone.model, images, sorted({depth for depth, _ in self.pair_sizes}))
        named = {"backbone": self.backbone.pooled(images) if FULL_DEPTH not in features else features[FULL_DEPTH]}
        for name, (depth, dim) in zip(self.pair_names, self.pair_sizes, strict=True):
            named[name] = features[depth][:, :dim]
        return named

    def on_step_end(self, step: int, total_steps: int) -> None:
        for base in self.bases:
            base.on_step_end(step, total_steps)
