"""Bytes per image of a dataset stored as token grids, as uint8 pixels and as JPEG files.

SeiT (arXiv 2303.11114) measures storage as the size of what training reads: ImageNet's JPEGs (140 GB)
against its token files (1.4 GB). Here every figure is per image and computed from shapes and files, never
estimated: the grid at its stored dtype, the grid packed at log2(K) bits a code (what a bit-packer would reach),
the npz on disk divided by its images (compression, labels and the tokenizer's weights included), and JPEG bytes
(the encoded files an npz of JPEGs holds, or PIL's quality-75 encoding of each image of an array dataset).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from pretrainlab.data.tokens.token_file import code_dtype


def token_grid_bytes(grid: tuple[int, int], codebook_size: int) -> int:
    """Bytes of one grid at its stored dtype: h * w * (1 for K <= 256, else 2)."""
    return grid[0] * grid[1] * code_dtype(codebook_size).itemsize


def packed_grid_bytes(grid: tuple[int, int], codebook_size: int) -> float:
    """Bytes of one grid packed at ceil(log2 K) bits per code."""
    return grid[0] * grid[1] * math.ceil(math.log2(codebook_size)) / 8


def pixel_bytes(image_size: tuple[int, int], channels: int) -> int:
    """Bytes of one uint8 image: H * W * C."""
    return image_size[0] * image_size[1] * channels


def jpeg_bytes_of_offsets(offsets: np.ndarray) -> float:
    """Mean bytes of the JPEG files of an npz split, from its offsets (N + 1,)."""
    return float(np.diff(np.asarray(offsets, dtype=np.int64)).mean())


def jpeg_bytes_of_images(images: np.ndarray, quality: int = 75, count: int = 2000) -> float:
    """Mean bytes of PIL's JPEG encoding at `quality` of the first `count` uint8 images (N, H, W, C)."""
    sizes = []
    for image in images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell())
    return float(np.mean(sizes))


def jpeg_bytes_of_spec(spec: str, images: np.ndarray) -> tuple[float, str]:
    """Mean JPEG bytes per image for a source: the stored files of an `npz:` of JPEGs, else PIL at quality 75."""
    kind, _, argument = spec.partition(":")
    if kind == "npz" and Path(argument).is_file():
        with np.load(argument, allow_pickle=False) as archive:
            if "offsets_train" in archive.files:
                return jpeg_bytes_of_offsets(archive["offsets_train"]), "the JPEG files the npz stores"
    return jpeg_bytes_of_images(images), "PIL JPEG quality 75 of the decoded images"


def storage_report(meta: dict, file_bytes: int, images_in_file: int, jpeg: float, jpeg_note: str) -> dict:
    """Per-image storage of a token file against uint8 pixels and JPEG, with the ratios."""
    grid, size = tuple(meta["grid"]), int(meta["codebook_size"])
    tokens, pixels = token_grid_bytes(grid, size), pixel_bytes(tuple(meta["image_size"]), int(meta["channels"]))
    on_disk = file_bytes / max(images_in_file, 1)
    return {
        "token_grid_bytes": tokens, "packed_grid_bytes": packed_grid_bytes(grid, size), "file_bytes_per_image": on_disk,
        "pixel_bytes": pixels, "jpeg_bytes": jpeg, "jpeg_source": jpeg_note,
        "pixels_over_tokens": pixels / tokens, "jpeg_over_tokens": jpeg / tokens,
        "pixels_over_file": pixels / on_disk, "jpeg_over_file": jpeg / on_disk,
    }
