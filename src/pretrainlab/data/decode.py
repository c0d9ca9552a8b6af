"""One encoded image -> a fixed-size uint8 array: the step shared by decoded sources, shards and the shard writer.

The image is resized so it covers the target box (shorter side first) and centre-cropped to it, the way
`folder:` has always decoded. JPEG files are first decoded at a reduced DCT scale when the target is much
smaller (`Image.draft`): for ImageNet-sized photos decoded to 64 px that skips most of the decoding work.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

# Everything PIL raises for a file it cannot read: truncated data, unknown formats, decompression bombs.
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
GRAY_MODES = {"L", "1", "I", "I;16", "I;16B", "I;16L", "F", "LA"}


def box_shape(size: int, aspect: float) -> tuple[int, int]:
    """(height, width) of the decode box: `size` rows, `round(size * aspect)` columns (aspect = width / height)."""
    return size, max(1, round(size * aspect))


def cover_and_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Resizes `image` to cover (height, width) with its aspect ratio kept, then centre-crops to exactly that."""
    source_width, source_height = image.size
    scale = max(height / source_height, width / source_width)
    new_size = (max(width, round(source_width * scale)), max(height, round(source_height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new_size[0] - width) // 2, (new_size[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def decode_image(data: bytes | BinaryIO | Path, size: int, mode: str, aspect: float = 1.0) -> np.ndarray | None:
    """Decodes one image to (size, round(size * aspect), C) uint8, C = 1 for mode "L" else 3; None if unreadable."""
    height, width = box_shape(size, aspect)
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            if image.format == "JPEG":
                image.draft(mode, (width, height))  # DCT scaling: never below the box, much less work above it
            array = np.array(cover_and_crop(image.convert(mode), height, width), dtype=np.uint8)
    except DECODE_ERRORS:
        return None
    return array[..., None] if array.ndim == 2 else array


def image_mode(data: bytes | BinaryIO | Path) -> str | None:
    """The PIL mode of an encoded image without decoding its pixels; None when unreadable."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            return image.mode
    except DECODE_ERRORS:
        return None
