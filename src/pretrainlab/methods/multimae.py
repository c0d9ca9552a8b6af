"""MultiMAE: one ViT encodes a few visible tokens of several modalities; a decoder per modality fills in the rest.

Bachmann, Mizrahi, Atanov, Zamir, "MultiMAE: Multi-modal Multi-task Masked Autoencoders", arXiv 2204.01678.

Modalities are made from the image itself, as the paper makes depth and segmentation pseudo labels
with networks (data/pseudo_modalities.py): "image" (the input, RGB or gray), "gray" (luminance; only
for RGB inputs), "edges" (Sobel magnitude) and "segments" (k-means colour classes, categorical, fitted
on the first training batch and then fixed). Every image keeps the same number of visible tokens over
all modalities, split by a Dirichlet draw (data/modality_masks.py). The image modality goes through the
backbone's own patch embedding, so the exported ViT is the one that saw images; the others get a
linear patch projection, the backbone's position embedding and a learned modality embedding. Each
decoder cross-attends to all encoded tokens; regression targets use the normalised-pixel MSE on hidden
patches, segments a per-pixel cross-entropy on hidden patches; the loss is the sum over modalities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.vit_parts import encode_tokens, gather_tokens, patch_embed_with_pos, patchify
from pretrainlab.data.color import grayscale
from pretrainlab.data.masks import keep_indices
from pretrainlab.data.modality_masks import dirichlet_visible_counts, modality_masks
from pretrainlab.data.pseudo_modalities import assign_segments, fit_kmeans, sobel_edges
from pretrainlab.data.views import ViewSpec
from pretrainlab.distributed import is_distributed
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads.cross_decoder import CrossViewDecoder, scatter_to_grid
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method
from pretrainlab.methods.parts.reconstruction import patch_reconstruction_grid

KNOWN_MODALITIES = ("image", "gray", "edges", "segments")


@dataclass(frozen=True)
class MultiMAEConfig:
    """Args:
        modalities: from image, gray, edges, segments; "image" is required, "gray" is dropped for 1-channel data.
        visible_share: visible tokens per image, all modalities together, as a share of one modality's
            patches (98 of 196 in the paper).
        dirichlet_alpha: concentration of the per-image modality shares (1.0 in the paper).
        segments: k-means classes of the "segments" modality.
        norm_pix_loss: regress per-patch normalised values for the regression modalities.
        decoder_dim, decoder_depth, decoder_heads: each modality's decoder (256 wide, 2 blocks in the paper).
        crop_min_scale: random-resized-crop lower bound.
    """

    modalities: tuple[str, ...] = ("image", "gray", "edges", "segments")
    visible_share: float = 0.5
    dirichlet_alpha: float = 1.0
    segments: int = 8
    norm_pix_loss: bool = True
    decoder_dim: int = 128
    decoder_depth: int = 1
    decoder_heads: int = 4
    crop_min_scale: float = 0.2

    def __post_init__(self) -> None:
        unknown = sorted(set(self.modalities) - set(KNOWN_MODALITIES))
        if unknown or "image" not in self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise PretrainlabError(f"modalities must be distinct names from {', '.join(KNOWN_MODALITIES)} including "
                                   f"'image', got {list(self.modalities)}")
        if not 0 < self.visible_share <= 1:
            raise PretrainlabError(f"visible_share must be in (0, 1], got {self.visible_share}")
        if self.segments < 2:
            raise PretrainlabError(f"segments must be >= 2, got {self.segments}")


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per image: (B, C, H, W)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True).clamp(min=1e-3)


@register_method("multimae")
class MultiMAE(Method):
    """Shared ViT over tokens of every modality; per-modality input projections and decoders."""

    config_class = MultiMAEConfig
    needs_tokens = True
    example_options = {"decoder_dim": 32, "decoder_heads": 2, "segments": 4}

    def __init__(self, backbone: Backbone, config: MultiMAEConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        self.modalities = [m for m in config.modalities if not (m == "gray" and context.in_chans == 1)]
        patch, dim = backbone.patch_size, backbone.embed_dim
        self.num_patches = backbone.grid_size[0] * backbone.grid_size[1]
        self.num_visible = max(1, round(config.visible_share * self.num_patches))
        channels = {"image": context.in_chans, "gray": 1, "edges": 1, "segments": config.segments}
        self.inputs = nn.ModuleDict({m: nn.Linear(patch * patch * channels[m], dim) for m in self.modalities
                                     if m != "image"})
        self.modality_embed = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, dim)) for m in self.inputs})
        self.decoders = nn.ModuleDict({
            m: CrossViewDecoder(dim, backbone.grid_size, config.decoder_dim, config.decoder_depth,
                                config.decoder_heads, patch * patch * channels[m])
            for m in self.modalities
        })
        self.register_buffer("segment_centroids", torch.zeros(config.segments, context.in_chans))
        self.register_buffer("segments_fitted", torch.zeros((), dtype=torch.bool))
        for parameter in self.modality_embed.values():
            nn.init.normal_(parameter, std=0.02)

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), jitter_p=0.0,
                                 grayscale_p=0.0)}

    @torch.no_grad()
    def segment_labels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) in [0, 1] -> k-means classes (B, S, S); the centroids are fitted on the first call."""
        if not bool(self.segments_fitted):
            self.segment_centroids.copy_(fit_kmeans(pixels, self.config.segments))
            if is_distributed():  # every rank must segment with the same centroids
                torch.distributed.broadcast(self.segment_centroids, src=0)
            self.segments_fitted.fill_(True)
        return assign_segments(pixels, self.segment_centroids)

    @torch.no_grad()
    def modality_targets(self, view: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised view (B, C, S, S) -> each modality's map (B, c, S, S); segments as class ids (B, S, S)."""
        pixels = (view * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)).clamp(0, 1).float()
        derived = {"image": view, "gray": grayscale(pixels), "edges": sobel_edges(pixels)}
        if "segments" in self.modalities:
            derived["segments"] = self.segment_labels(pixels)
        return {m: derived[m] for m in self.modalities}

    def embed(self, modality: str, target: torch.Tensor) -> torch.Tensor:
        """One modality's map -> tokens with position (and modality) embedding: (B, N, D)."""
        vit = self.backbone.model
        if modality == "image":
            return patch_embed_with_pos(vit, target)
        if modality == "segments":
            target = F.one_hot(target, self.config.segments).permute(0, 3, 1, 2).float()
        else:
            target = standardise(target)
        tokens = self.inputs[modality](patchify(target.to(vit.pos_embed.dtype), self.backbone.patch_size))
        position = vit.pos_embed if vit.no_embed_class else vit.pos_embed[:, vit.num_prefix_tokens :]
        return tokens + position + self.modality_embed[modality]

    def modality_loss(self, modality: str, prediction: torch.Tensor, target: torch.Tensor,
                      hidden: torch.Tensor) -> torch.Tensor:
        """prediction (B, N, p*p*c), hidden (B, N) -> loss on hidden patches."""
        patch = self.backbone.patch_size
        if modality != "segments":
            return masked_patch_loss(prediction, patchify(target, patch), hidden, self.config.norm_pix_loss)
        classes = patchify(target.unsqueeze(1).float(), patch).long()  # (B, N, p*p)
        logits = prediction.reshape(*classes.shape, self.config.segments)  # (B, N, p*p, K)
        per_patch = F.cross_entropy(logits.flatten(0, 2), classes.flatten(), reduction="none").view(classes.shape)
        weights = hidden.float()
        return (per_patch.mean(dim=-1) * weights).sum() / weights.sum().clamp(min=1.0)

    def encode(self, tokens: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """tokens (B, M * N, D), hidden (B, M, N) -> (all encoded tokens (B, P + T, D), per modality (B, N, D) grids).

        Only the visible tokens enter the encoder; on the grids hidden positions hold zeros.
        """
        visible_index, _ = keep_indices(hidden.flatten(1))  # (B, T): the same T for every image
        encoded = encode_tokens(self.backbone.model, gather_tokens(tokens, visible_index))  # (B, P + T, D)
        grid = scatter_to_grid(encoded[:, self.backbone.num_prefix_tokens :], visible_index, tokens.shape[1])
        return encoded, list(grid.chunk(len(self.modalities), dim=1))

    def predict(self, targets: dict[str, torch.Tensor], hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every modality's predictions (B, N, p*p*c) from the visible tokens of all; hidden (B, M, N)."""
        tokens = torch.cat([self.embed(m, targets[m]) for m in self.modalities], dim=1)  # (B, M * N, D)
        encoded, on_grid = self.encode(tokens, hidden)
        return {m: self.decoders[m](on_grid[index], ~hidden[:, index], encoded)
                for index, m in enumerate(self.modalities)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        view = batch.views["base"][0].images
        targets = self.modality_targets(view)
        counts = dirichlet_visible_counts(view.shape[0], len(self.modalities), self.num_visible,
                                          self.config.dirichlet_alpha, batch.generator, view.device, self.num_patches)
        hidden = modality_masks(counts, self.num_patches, batch.generator)  # (B, M, N)
        predictions = self.predict(targets, hidden)
        outputs, total = {}, view.new_zeros(())
        for index, modality in enumerate(self.modalities):
            loss = self.modality_loss(modality, predictions[modality], targets[modality], hidden[:, index])
            outputs[f"loss_{modality}"] = loss.detach()
            total = total + loss
        return {"loss": total, "reconstruction_loss": outputs["loss_image"], **outputs}

    @torch.no_grad()
    def reconstruction_grid(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The image modality rebuilt from the visible tokens of all modalities (its own visible share shown)."""
        targets = self.modality_targets(images)
        counts = dirichlet_visible_counts(images.shape[0], len(self.modalities), self.num_visible,
                                          self.config.dirichlet_alpha, generator, images.device, self.num_patches)
        hidden = modality_masks(counts, self.num_patches, generator)
        prediction = self.predict(targets, hidden)["image"]
        return patch_reconstruction_grid(images, prediction, hidden[:, 0], self.backbone.patch_size, self.mean,
                                         self.std, self.config.norm_pix_loss)
