"""Augmentations in token space: TokenAdapt and ColorAdapt (SeiT++, arXiv 2312.10105, section 3.2).

Pixel augmentations do not carry over to code grids: resizing a grid of indices mixes unrelated codes, and a
colour shift has no meaning on an index. SeiT++ therefore augments elsewhere:
- **TokenAdapt**: a learned conversion f maps the codebook vectors of a grid to a feature map at twice the grid's
  resolution, where random-resized-crop and flip are applied as on pixels; a learned inversion g maps the
  augmented map back to code logits at the grid's resolution, and the argmax is the augmented token grid. f and g
  are trained once, with the tokenizer, so that g(crop(f(tokens(x)))) predicts tokens(crop(x)): the tokens of
  the augmented image (training.py). The paper uses one-layer transformers for f and g; here two small
  convolution stacks play that role at 7x7-8x8 grids.
- **ColorAdapt**: AdaIN (Huang and Belongie, arXiv 1703.06868) in codebook-vector space: an image's vectors are
  normalised per channel over the grid and given the mean and standard deviation of another image of the batch
  (the batch reversed), a colour-style transfer. The paper feeds the restyled vectors to the network; the token
  backbones here take code indices, so the restyled vectors are re-quantised to their nearest codes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pretrainlab.data.views import ViewSpec, crop_resize_flip, sample_crop_boxes


class TokenAdapter(nn.Module):
    """f (`convert`) and g (`invert`) of TokenAdapt.

    Args:
        code_dim: size D of a codebook vector.
        codebook_size: number of codes K.
        width: channels of the feature space augmentations act in.
    """

    def __init__(self, code_dim: int, codebook_size: int, width: int = 64) -> None:
        super().__init__()
        self.convert = nn.Sequential(
            nn.Conv2d(code_dim, width, 1), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1))
        self.invert = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 4, stride=2, padding=1),
            nn.GELU(), nn.Conv2d(width, codebook_size, 1))

    def logits(self, vectors: torch.Tensor, boxes: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        """codebook vectors (B, D, h, h), crop boxes (B, 4) as fractions, flips (B,) -> code logits (B, K, h, h)."""
        features = self.convert(vectors)  # (B, F, 2h, 2h)
        return self.invert(crop_resize_flip(features, boxes, flipped, features.shape[-1]))


def draw_crops(batch: int, grid: int, crop_scale: tuple[float, float], generator: torch.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random-resized-crop boxes (B, 4) (fractions of the image, so pixels and grids share them) and flips (B,)."""
    spec = ViewSpec(max(grid, 4), crop_scale=crop_scale)
    boxes = sample_crop_boxes(batch, grid * 4, grid * 4, spec, generator, device)  # a finer lattice than the grid
    flipped = torch.rand(batch, generator=generator, device=device) < 0.5
    return boxes, flipped


@torch.no_grad()
def token_adapt(codes: torch.Tensor, adapter: TokenAdapter, codebook: torch.Tensor, probability: float,
                crop_scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """codes (B, h, h) int64 -> codes with a random resized crop and flip through TokenAdapt for each image
    drawn with `probability`; the others are returned as they are."""
    chosen = torch.rand(len(codes), generator=generator, device=codes.device) < probability
    boxes, flipped = draw_crops(len(codes), codes.shape[-1], crop_scale, generator, codes.device)
    if not chosen.any():
        return codes
    vectors = codebook[codes[chosen]].permute(0, 3, 1, 2)  # (b, D, h, h)
    augmented = adapter.logits(vectors, boxes[chosen], flipped[chosen]).argmax(1)  # (b, h, h)
    codes = codes.clone()
    codes[chosen] = augmented
    return codes


def nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) vectors -> (B, h, w) indices of their nearest codebook rows (K, D)."""
    flat = vectors.permute(0, 2, 3, 1).reshape(-1, vectors.shape[1])
    return torch.cdist(flat, codebook).argmin(1).reshape(vectors.shape[0], *vectors.shape[2:])


@torch.no_grad()
def color_adapt(codes: torch.Tensor, codebook: torch.Tensor, probability: float,
                generator: torch.Generator) -> torch.Tensor:
    """codes (B, h, w) -> codes whose images drawn with `probability` carry the channel statistics (in codebook
    space) of their partner in the reversed batch, re-quantised; the others are returned as they are."""
    chosen = torch.rand(len(codes), generator=generator, device=codes.device) < probability
    if not chosen.any() or len(codes) < 2:
        return codes
    vectors = codebook[codes].permute(0, 3, 1, 2)  # (B, D, h, w)
    mean = vectors.mean(dim=(2, 3), keepdim=True)
    std = vectors.std(dim=(2, 3), keepdim=True) + 1e-5
    styled = (vectors - mean) / std * std.flip(0) + mean.flip(0)
    codes = codes.clone()
    codes[chosen] = nearest_codes(styled[chosen], codebook)
    return codes
