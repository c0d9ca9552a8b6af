"""Trains a token file's tokenizer on a source's images and encodes its splits (`pretrainlab tokenize`).

Two stages, both on the training split only: the VQ-VAE (vq.py) learns to reconstruct images through its codes;
then, with the VQ-VAE frozen, TokenAdapt's conversion and inversion (adapt.py) learn to predict the tokens of a
randomly cropped and flipped image from the tokens of the whole one (SeiT++, arXiv 2312.10105).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pretrainlab.data.source import ImageSource
from pretrainlab.data.tokens.adapt import TokenAdapter, draw_crops
from pretrainlab.data.tokens.token_file import FORMAT, Tokenizer, tokenizer_id
from pretrainlab.data.tokens.vq import VQVAE, VQConfig
from pretrainlab.data.views import crop_resize_flip, to_float
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizeConfig:
    """Args:
        codebook_size, code_dim, hidden, downsample: the VQ-VAE (vq.VQConfig); the grid is size / 2**downsample.
        vq_steps, adapt_steps: optimiser steps of the VQ-VAE and of TokenAdapt.
        batch_size, lr: Adam settings of both stages.
        adapter_width: channels of TokenAdapt's feature space.
        crop_scale: random-resized-crop area range TokenAdapt learns (the MTM method's range should lie in it).
        seed: initial weights, batch order, crops, codebook restarts.
    """

    codebook_size: int = 256
    code_dim: int = 16
    hidden: int = 32
    downsample: int = 2
    vq_steps: int = 1000
    adapt_steps: int = 300
    batch_size: int = 64
    lr: float = 2e-3
    adapter_width: int = 64
    crop_scale: tuple[float, float] = (0.25, 1.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.vq_steps < 1 or self.adapt_steps < 0 or self.batch_size < 2 or self.lr <= 0:
            raise PretrainlabError("tokenize needs vq_steps >= 1, adapt_steps >= 0, batch_size >= 2 and lr > 0")
        if not 2 <= self.codebook_size <= 65536 or not 1 <= self.downsample <= 4:
            raise PretrainlabError(f"tokenize needs a codebook of 2..65536 codes (uint8 up to 256, else uint16) and "
                                   f"1..4 downsampling stages; got {self.codebook_size} and {self.downsample}")
        if self.code_dim < 1 or self.hidden < 1 or self.adapter_width < 1:
            raise PretrainlabError("tokenize needs code_dim, hidden and adapter_width >= 1")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise PretrainlabError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")


def check_tokenizable(source: ImageSource, config: TokenizeConfig) -> None:
    height, width = source.image_size
    stride = 2 ** config.downsample
    if height != width or height % stride:
        raise PretrainlabError(f"tokenize needs square images whose side divides by 2**downsample = {stride}; "
                               f"'{source.spec}' has {height}x{width}; choose --downsample or --img-size")


def _batches(images: np.ndarray, batch_size: int, steps: int, generator: torch.Generator):  # noqa: ANN202
    """`steps` random batches (B, C, H, W) in [0, 1], drawn without replacement within each pass."""
    order = torch.randperm(len(images), generator=generator)
    position = 0
    for _ in range(steps):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(images), generator=generator), 0
        index = np.sort(order[position : position + batch_size].numpy())
        position += batch_size
        yield to_float(torch.from_numpy(np.ascontiguousarray(images[index])))


def _cosine_lr(optimizer: torch.optim.Optimizer, base: float, step: int, total: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))


def train_vq(images: np.ndarray, config: TokenizeConfig, generator: torch.Generator, show_progress: bool) -> VQVAE:
    vq = VQVAE(VQConfig(config.codebook_size, config.code_dim, config.hidden, config.downsample, images.shape[-1]))
    optimizer = torch.optim.Adam([p for p in vq.parameters() if p.requires_grad], lr=config.lr)
    batch_size = min(config.batch_size, len(images))
    bar = tqdm(_batches(images, batch_size, config.vq_steps, generator), total=config.vq_steps,
               desc="tokenizer (VQ-VAE)", disable=not show_progress)
    vq.train()
    for step, x in enumerate(bar):
        _cosine_lr(optimizer, config.lr, step, config.vq_steps)
        out = vq(x, generator)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        if step % 20 == 0:
            bar.set_postfix(mse=f"{out['reconstruction']:.4f}", codes=int(out["codes_used"]))
    return vq.eval()


def train_adapter(images: np.ndarray, vq: VQVAE, config: TokenizeConfig, generator: torch.Generator,
                  show_progress: bool) -> TokenAdapter:
    """f and g so that g(crop(f(codebook[tokens(x)]))) predicts tokens(crop(x)), cross-entropy per grid cell."""
    adapter = TokenAdapter(config.code_dim, config.codebook_size, config.adapter_width)
    optimizer = torch.optim.Adam(adapter.parameters(), lr=config.lr)
    batch_size = min(config.batch_size, len(images))
    bar = tqdm(_batches(images, batch_size, config.adapt_steps, generator), total=config.adapt_steps,
               desc="TokenAdapt", disable=not show_progress)
    for step, x in enumerate(bar):
        _cosine_lr(optimizer, config.lr, step, config.adapt_steps)
        with torch.no_grad():
            codes = vq.encode(x)  # (B, h, h)
            boxes, flipped = draw_crops(len(x), codes.shape[-1], config.crop_scale, generator, x.device)
            target = vq.encode(crop_resize_flip(x, boxes, flipped, x.shape[-1]))  # tokens of the augmented image
        logits = adapter.logits(vq.quantizer.lookup(codes), boxes, flipped)  # (B, K, h, h)
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return adapter.eval()


@torch.no_grad()
def encode_images(vq: VQVAE, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """uint8 (N, H, W, C) -> codes (N, h, w) int64."""
    parts = [vq.encode(to_float(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])))).numpy()
             for i in range(0, len(images), batch_size)]
    return np.concatenate(parts)


@torch.no_grad()
def reconstruction_quality(vq: VQVAE, images: np.ndarray, count: int = 2000) -> dict[str, float]:
    """Mean squared error and PSNR (dB) of decode(encode(x)) over the first `count` images, pixels in [0, 1]."""
    x = to_float(torch.from_numpy(np.ascontiguousarray(images[:count])))
    mse = float(F.mse_loss(vq.decode(vq.encode(x)), x))
    return {"mse": mse, "psnr_db": 10 * math.log10(1.0 / max(mse, 1e-12))}


@torch.no_grad()
def adapter_agreement(vq: VQVAE, adapter: TokenAdapter, images: np.ndarray, config: TokenizeConfig,
                      count: int = 1000) -> dict[str, float]:
    """Share (%) of grid cells where augmented tokens equal the tokens of the augmented image: through TokenAdapt,
    and by resampling the code grid itself (nearest cell, SeiT's crop of the grid: the baseline TokenAdapt beats)."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    x = to_float(torch.from_numpy(np.ascontiguousarray(images[:count])))
    codes = vq.encode(x)
    boxes, flipped = draw_crops(len(x), codes.shape[-1], config.crop_scale, generator, x.device)
    target = vq.encode(crop_resize_flip(x, boxes, flipped, x.shape[-1]))
    predicted = adapter.logits(vq.quantizer.lookup(codes), boxes, flipped).argmax(1)
    resampled = nearest_resample(codes, boxes, flipped)
    return {"token_adapt": 100.0 * float((predicted == target).float().mean()),
            "grid_resampling": 100.0 * float((resampled == target).float().mean())}


def nearest_resample(codes: torch.Tensor, boxes: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """codes (B, h, h) cropped to `boxes`, flipped and resized back to h x h by taking the nearest cell."""
    centre_x, centre_y = boxes[:, 0] + boxes[:, 2] - 1, boxes[:, 1] + boxes[:, 3] - 1
    half_w = (boxes[:, 2] - boxes[:, 0]) * torch.where(flipped, -1.0, 1.0)
    half_h = boxes[:, 3] - boxes[:, 1]
    size = codes.shape[-1]
    base = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    grid_x = ((centre_x[:, None] + half_w[:, None] * base + 1) / 2 * size).floor().clamp(0, size - 1).long()
    grid_y = ((centre_y[:, None] + half_h[:, None] * base + 1) / 2 * size).floor().clamp(0, size - 1).long()
    rows = torch.arange(len(codes))[:, None, None]
    return codes[rows, grid_y[:, :, None], grid_x[:, None, :]]


def train_tokenizer(source: ImageSource, config: TokenizeConfig, show_progress: bool = True) -> Tokenizer:
    """The tokenizer of `source` (VQ-VAE, then TokenAdapt), with the facts a token file records in `meta`."""
    check_tokenizable(source, config)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    vq = train_vq(source.train.images, config, generator, show_progress)
    adapter = train_adapter(source.train.images, vq, config, generator, show_progress)
    held_out = source.test.images if source.test is not None else source.train.images
    grid = source.image_size[0] // 2 ** config.downsample
    meta = {
        "format": FORMAT, "codebook_size": config.codebook_size, "grid": [grid, grid],
        "image_size": list(source.image_size), "channels": source.channels, "vq": vq.config.as_dict(),
        "adapter_width": config.adapter_width, "tokenizer_id": tokenizer_id(vq.codebook), "source": source.spec,
        "split": source.split_note, "mirror_invariant": source.mirror_invariant,
        "training": {"vq_steps": config.vq_steps, "adapt_steps": config.adapt_steps, "batch_size": config.batch_size,
                     "lr": config.lr, "crop_scale": list(config.crop_scale), "seed": config.seed},
        "reconstruction": reconstruction_quality(vq, held_out),
    }
    agreement = adapter_agreement(vq, adapter, held_out, config)
    meta["token_adapt_agreement"], meta["grid_resampling_agreement"] = agreement["token_adapt"], agreement[
        "grid_resampling"]
    meta["seconds"] = round(time.perf_counter() - started, 1)
    log.info("tokenizer trained in %.0f s: held-out PSNR %.1f dB, TokenAdapt agreement %.1f %% (grid resampling "
             "%.1f %%)", meta["seconds"], meta["reconstruction"]["psnr_db"], meta["token_adapt_agreement"],
             meta["grid_resampling_agreement"])
    return Tokenizer(vq, adapter, meta)
