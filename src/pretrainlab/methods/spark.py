"""SparK: BERT-style masked modelling for any convolutional network, with sparse convolution and a UNet decoder.

Tian, Jiang, Yuan, Wang, Zhang, "Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked
Modeling", arXiv 2301.03580.

The image is cut into patches of the encoder's coarsest stride (32 px for a ResNet at 224 px) and 60 % of
them are hidden. The CNN encodes only the visible patches, as a sparse CNN would: masked positions stay empty
through every convolution and normalisation (backbones/sparse_conv.py emulates this on the unmodified timm
model). A light hierarchical decoder fills learned mask tokens into the empty positions of every feature map,
upsamples from the coarsest one while adding the finer ones, and the loss is the error on the per-patch
normalised pixels of the hidden patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.sparse_conv import check_sparse_support, sparse_convolution
from pretrainlab.backbones.vit_parts import patchify
from pretrainlab.data.masks import random_patch_mask
from pretrainlab.data.views import ViewSpec
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads.hierarchical_decoder import HierarchicalDecoder
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method
from pretrainlab.methods.parts.reconstruction import patch_reconstruction_grid

MIN_GRID = 4  # fewer mask cells per side than this leaves too few patches to hide a share of


@dataclass(frozen=True)
class SparKConfig:
    """Args:
        mask_ratio: share of patches hidden (0.6 in the paper).
        mask_patch_size: side of a mask patch in pixels; 0 picks the coarsest feature map's stride (the paper's
            choice) among the maps with at least 4 cells per side, so small images still get a useful grid.
        norm_pix_loss: regress per-patch normalised pixels (the paper's target).
        decoder_width: decoder channels at the coarsest level, halved at every finer level (min 16).
        crop_min_scale: random-resized-crop lower bound (0.67 in the paper).
    """

    mask_ratio: float = 0.6
    mask_patch_size: int = 0
    norm_pix_loss: bool = True
    decoder_width: int = 64
    crop_min_scale: float = 0.67


def feature_map_shapes(backbone: Backbone, img_size: int, in_chans: int) -> list[tuple[int, int, int]]:
    """(C, H, W) of each of `backbone.feature_maps`, from one probe image in eval mode (running stats untouched)."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            maps = backbone.feature_maps(torch.zeros(1, in_chans, img_size, img_size))
    finally:
        backbone.train(was_training)
    return [(int(m.shape[1]), int(m.shape[2]), int(m.shape[3])) for m in maps]


def choose_mask_patch(shapes: list[tuple[int, int, int]], img_size: int, requested: int) -> int:
    """The mask patch side in pixels: `requested`, or the coarsest stride with >= MIN_GRID cells per side."""
    if requested:
        patch = requested
    else:
        usable = [size for _, size, _ in shapes if size >= MIN_GRID]
        if not usable:
            raise PretrainlabError(f"images of {img_size} px leave no feature map of {MIN_GRID}x{MIN_GRID} or more; "
                                   "use a larger --img-size or set method option mask_patch_size")
        patch = img_size // min(usable)
    if patch < 1 or img_size % patch or img_size // patch < 2:
        raise PretrainlabError(f"mask_patch_size {patch} must divide the image size {img_size} into at least 2 "
                               f"patches per side; try mask_patch_size={max(1, img_size // MIN_GRID)}")
    return patch


@register_method("spark")
class SparK(Method):
    """A CNN encodes only the visible patches (sparse), a UNet-like decoder paints the hidden ones back."""

    config_class = SparKConfig
    example_options = {"decoder_width": 16}

    def __init__(self, backbone: Backbone, config: SparKConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        if backbone.has_tokens:
            raise PretrainlabError(f"spark is for convolutional backbones, got the transformer '{backbone.name}'; "
                                   "use --method mae or simmim for vision transformers")
        check_sparse_support(backbone.model, backbone.name)
        shapes = feature_map_shapes(backbone, context.img_size, context.in_chans)
        self.patch_size = choose_mask_patch(shapes, context.img_size, config.mask_patch_size)
        self.grid = (context.img_size // self.patch_size, context.img_size // self.patch_size)
        # one map per resolution, the deepest (ResNets give the stem and layer1 at the same size)
        deepest = {(height, width): index for index, (_, height, width) in enumerate(shapes)}
        self.levels = sorted(deepest.values(), key=lambda index: -shapes[index][1])  # finest first
        self.decoder = HierarchicalDecoder(
            [shapes[i][0] for i in self.levels], [shapes[i][1:] for i in self.levels],
            (context.img_size, context.img_size), config.decoder_width, context.in_chans,
        )

    def view_specs(self) -> dict[str, ViewSpec]:
        return {"base": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), jitter_p=0.0,
                                 grayscale_p=0.0)}

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sparse encoding of images (B, C, H, W) with mask (B, N) True = hidden.

        Returns the feature maps used by the decoder, finest first, zero at masked positions, and their
        visibility masks [(B, 1, H_i, W_i)].
        """
        visible = ~mask.view(mask.shape[0], *self.grid)  # (B, h, w)
        with sparse_convolution(self.backbone.model, visible) as pyramid:
            maps = self.backbone.feature_maps(images * pyramid.at(images.shape[-2:]).to(images.dtype))
        # per-position layers after the last convolution (norms, MLP biases) may leave constants there
        visibility = [pyramid.at(maps[i].shape[-2:]).to(maps[i].dtype) for i in self.levels]
        return [maps[i] * seen for i, seen in zip(self.levels, visibility, strict=True)], visibility

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """images (B, C, H, W), mask (B, N) -> predicted patches (B, N, p * p * C)."""
        features, visibility = self.encode(images, mask)
        return patchify(self.decoder(features, visibility), self.patch_size)

    def draw_mask(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        return random_patch_mask(batch, self.grid[0] * self.grid[1], self.config.mask_ratio, generator, device)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch.views["base"][0].images
        mask = self.draw_mask(images.shape[0], batch.generator, images.device)
        prediction = self.reconstruct(images, mask)
        target = patchify(images, self.patch_size)
        loss = masked_patch_loss(prediction.float(), target.float(), mask, self.config.norm_pix_loss)
        return {"loss": loss, "reconstruction_loss": loss.detach()}

    @torch.no_grad()
    def reconstruction_grid(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mask = self.draw_mask(images.shape[0], generator, images.device)
        return patch_reconstruction_grid(images, self.reconstruct(images, mask), mask, self.patch_size, self.mean,
                                         self.std, self.config.norm_pix_loss)
