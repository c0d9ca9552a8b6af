"""CroCo: cross-view completion, masked image modelling that needs a second view of the same scene.

Weinzaepfel et al., "CroCo: Self-Supervised Pre-training for 3D Vision Tasks by Cross-View Completion",
arXiv 2210.10716.

The first view is masked heavily (90 %); one shared ViT encodes its visible patches and, separately,
the whole second view; a decoder that cross-attends to the second view's tokens reconstructs the
first view's hidden patches (normalised pixels, loss on hidden patches only).

Where the second view comes from:
- a pair source (`--data pairs:PATH`): the partner image, cropped with the first view's box, so both
  views frame the same part of their images (the paper's pairs are two photos of one scene);
- any other source: a PROXY. The second view is another crop of the same image, shifted by up to
  `proxy_shift` of the first crop's size and rescaled within `proxy_scale`, so the two overlap. This
  is cross-view completion without a change of viewpoint: the second view shows the hidden content
  itself (in a shifted, rescaled frame) rather than the scene from elsewhere, an easier task than
  the paper's and not evidence of what CroCo learns from real pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pretrainlab.backbones import Backbone
from pretrainlab.backbones.vit_parts import encode_tokens, gather_tokens, patch_embed_with_pos, patchify
from pretrainlab.data.masks import keep_indices, random_patch_mask
from pretrainlab.data.pairs import PARTNERS
from pretrainlab.data.views import ViewSpec, crop_resize_flip, normalize, to_float
from pretrainlab.errors import PretrainlabError
from pretrainlab.heads.cross_decoder import CrossViewDecoder, scatter_to_grid
from pretrainlab.losses.reconstruction import masked_patch_loss
from pretrainlab.methods.base import Batch, Method, MethodContext, register_method
from pretrainlab.methods.parts.reconstruction import patch_reconstruction_grid


@dataclass(frozen=True)
class CroCoConfig:
    """Args:
        mask_ratio: share of the first view's patches hidden (0.9 in the paper).
        norm_pix_loss: regress per-patch normalised pixels.
        decoder_dim, decoder_depth, decoder_heads: the cross-attention decoder (512/8/16 in the paper).
        crop_min_scale: random-resized-crop lower bound of the first view.
        proxy_shift: proxy pairs: the second crop's centre moves by up to this share of the first crop's size.
        proxy_scale: proxy pairs: the second crop's side relative to the first (log-uniform in this range).
    """

    mask_ratio: float = 0.9
    norm_pix_loss: bool = True
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    crop_min_scale: float = 0.3
    proxy_shift: float = 0.25
    proxy_scale: tuple[float, float] = (0.75, 1.33)

    def __post_init__(self) -> None:
        if not 0 <= self.proxy_shift < 0.5:
            raise PretrainlabError(f"proxy_shift must be in [0, 0.5) so the two crops overlap, got {self.proxy_shift}")
        low, high = self.proxy_scale
        if not 0 < low <= high:
            raise PretrainlabError(f"proxy_scale must satisfy 0 < low <= high, got {self.proxy_scale}")


def related_boxes(boxes: torch.Tensor, max_shift: float, scale_range: tuple[float, float],
                  generator: torch.Generator | None) -> torch.Tensor:
    """Crop boxes that overlap `boxes` (B, 4) (x0, y0, x1, y1 as fractions): shifted, rescaled, kept inside."""
    batch = boxes.shape[0]
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    log_low, log_high = math.log(scale_range[0]), math.log(scale_range[1])
    factor = torch.empty(batch, device=boxes.device).uniform_(log_low, log_high, generator=generator).exp()
    shift = torch.empty(batch, 2, device=boxes.device).uniform_(-max_shift, max_shift, generator=generator)
    new_width, new_height = (width * factor).clamp(max=1.0), (height * factor).clamp(max=1.0)
    x0 = (centre_x + shift[:, 0] * width - new_width / 2).clamp(min=0.0)
    y0 = (centre_y + shift[:, 1] * height - new_height / 2).clamp(min=0.0)
    x0, y0 = torch.minimum(x0, 1.0 - new_width), torch.minimum(y0, 1.0 - new_height)
    return torch.stack([x0, y0, x0 + new_width, y0 + new_height], dim=1)


@register_method("croco")
class CroCo(Method):
    """Shared ViT encoder for both views; the decoder completes view 1 attending to view 2."""

    config_class = CroCoConfig
    needs_tokens = True
    example_options = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}

    def __init__(self, backbone: Backbone, config: CroCoConfig, context: MethodContext) -> None:
        super().__init__(backbone, config, context)
        patch = backbone.patch_size
        self.decoder = CrossViewDecoder(backbone.embed_dim, backbone.grid_size, config.decoder_dim,
                                        config.decoder_depth, config.decoder_heads, patch * patch * context.in_chans)

    def view_specs(self) -> dict[str, ViewSpec]:
        # No flips or colour changes: the second view is cut from the same geometry as the first.
        return {"first": ViewSpec(self.context.img_size, crop_scale=(self.config.crop_min_scale, 1.0), flip_p=0.0,
                                  jitter_p=0.0, grayscale_p=0.0)}

    @torch.no_grad()
    def second_view(self, batch: Batch) -> torch.Tensor:
        """(B, C, S, S) normalised: the partner image under the first view's box, else a related crop (proxy)."""
        first = batch.views["first"][0]
        size = first.images.shape[-1]
        with torch.autocast(first.images.device.type, enabled=False):
            if PARTNERS in batch.extra:
                partners = to_float(batch.extra[PARTNERS].to(first.images.device))
                crop = crop_resize_flip(partners, first.boxes, first.flipped, size)
            else:
                boxes = related_boxes(first.boxes, self.config.proxy_shift, self.config.proxy_scale, batch.generator)
                crop = crop_resize_flip(batch.images, boxes, first.flipped, size)
            return normalize(crop, self.mean, self.std)

    def complete(self, first: torch.Tensor, second: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """first, second (B, C, S, S), mask (B, N) True = hidden -> predicted patches of `first` (B, N, p*p*C)."""
        vit = self.backbone.model
        prefix = self.backbone.num_prefix_tokens
        visible_index, _ = keep_indices(mask)  # (B, K)
        tokens = patch_embed_with_pos(vit, first)  # (B, N, D)
        visible = encode_tokens(vit, gather_tokens(tokens, visible_index))[:, prefix:]  # (B, K, D)
        reference = encode_tokens(vit, patch_embed_with_pos(vit, second))[:, prefix:]  # (B, N, D)
        grid = scatter_to_grid(visible, visible_index, tokens.shape[1])  # (B, N, D)
        return self.decoder(grid, ~mask, reference, context_on_grid=True)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        first = batch.views["first"][0].images
        second = self.second_view(batch)
        num_patches = self.backbone.grid_size[0] * self.backbone.grid_size[1]
        mask = random_patch_mask(first.shape[0], num_patches, self.config.mask_ratio, batch.generator, first.device)
        prediction = self.complete(first, second, mask)
        loss = masked_patch_loss(prediction, patchify(first, self.backbone.patch_size), mask, self.config.norm_pix_loss)
        return {"loss": loss, "reconstruction_loss": loss.detach()}

    @torch.no_grad()
    def reconstruction_grid(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Completion of each image from 10 % of its patches and a proxy second view (a related crop)."""
        full = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=images.device).expand(images.shape[0], 4)
        boxes = related_boxes(full, self.config.proxy_shift, self.config.proxy_scale, generator)
        pixels = images * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)
        no_flip = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        second = normalize(crop_resize_flip(pixels, boxes, no_flip, images.shape[-1]), self.mean, self.std)
        num_patches = self.backbone.grid_size[0] * self.backbone.grid_size[1]
        mask = random_patch_mask(images.shape[0], num_patches, self.config.mask_ratio, generator, images.device)
        return patch_reconstruction_grid(images, self.complete(images, second, mask), mask, self.backbone.patch_size,
                                         self.mean, self.std, self.config.norm_pix_loss)
