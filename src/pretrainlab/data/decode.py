"""One encoded image -> a fixed-size uint8 array: the step shared by decoded sources, shards and the shard writer.

The image is resized so it covers the target box (shorter side first) and centre-cropped to it, the way
`folder:` has always decoded. JPEGs take one of two decoders. A JPEG that already covers the box at its own
size (no resize, at most a crop; CIFAR-10's 32 px files decoded to 32 px) goes to torchvision's
`decode_jpeg` (libjpeg-turbo): half PIL's CPU time an image (measured: 47 vs 92 us on CIFAR-10's JPEGs).
Every other one goes to PIL, at a reduced DCT scale when it is larger (`Image.draft`; for ImageNet-sized
photos decoded to 64 px that skips most of the work), and PIL resizes: a tensor resize of one small image
costs more than PIL's (48 px JPEGs to 32 px: 166 vs 132 us), and from a decoding thread pool it runs on
PyTorch's intra-op threads as well, which on a loaded machine cost ~4 ms an image (measured).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from torchvision.io import ImageReadMode

# Everything PIL raises for a file it cannot read: truncated data, unknown formats, decompression bombs.
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
GRAY_MODES = {"L", "1", "I", "F", "LA", *SIXTEEN_BIT_MODES}
# Part of decoded caches' keys: 2 scales 16-bit and float images instead of clipping them; 3 decodes large
# JPEGs at a reduced DCT scale and small ones with torchvision; 4 gives torchvision only JPEGs at the box size.
DECODE_VERSION = 4


def to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float images as 8-bit "L", scaled by the mode's range, never clipped.

    16-bit (`I;16`) by 1/257; 32-bit integer (`I`) by 1/257 when its values lie in 0..65535 (how 16-bit data
    often arrives), else by the image's own min..max; float (`F`) by 255 when its values lie in [0, 1], else by
    its own min..max. NaN or infinite pixels raise ValueError (the file is then a counted skip).
    """
    if image.mode not in SIXTEEN_BIT_MODES | {"I", "F"}:
        return image
    values = np.asarray(image).astype(np.float32)  # (H, W)
    if not np.isfinite(values).all():
        raise ValueError("NaN or infinite pixels")
    low, high = float(values.min()), float(values.max())
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 257.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    else:  # the image's own range
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.rint(scaled).astype(np.uint8))


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


def cover_and_crop_tensor(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, h, w) uint8 -> (height, width, C) uint8: resized to cover the box with its aspect kept, centre-cropped."""
    _, source_height, source_width = image.shape
    scale = max(height / source_height, width / source_width)
    new_height, new_width = max(height, round(source_height * scale)), max(width, round(source_width * scale))
    if (new_height, new_width) != (source_height, source_width):
        resized = F.interpolate(image[None].float(), size=(new_height, new_width), mode="bilinear",
                                antialias=True, align_corners=False)[0]
        image = resized.round_().clamp_(0, 255).to(torch.uint8)
    top, left = (new_height - height) // 2, (new_width - width) // 2
    return image[:, top : top + height, left : left + width].permute(1, 2, 0)


def jpeg_shape(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame marker, without decoding; None when not found."""
    position = 2
    while position + 9 < len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (int.from_bytes(data[position + 5 : position + 7], "big"),
                    int.from_bytes(data[position + 7 : position + 9], "big"))
        position += 2 + length
    return None


def _decode_jpeg_at_box_size(data: bytes, mode: str, height: int, width: int) -> np.ndarray | None:
    """torchvision's decoder for a JPEG that covers the box at its own size (cropped, never resized); None: PIL."""
    from torchvision.io import ImageReadMode, decode_jpeg

    shape = jpeg_shape(data)
    if shape is None or max(height / shape[0], width / shape[1]) != 1:
        return None
    with warnings.catch_warnings():  # torchvision 0.29 announces a move of its decoders to torchcodec
        warnings.simplefilter("ignore")
        try:
            image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                mode=ImageReadMode.GRAY if mode == "L" else ImageReadMode.RGB)
        except RuntimeError:
            return None
    return cover_and_crop_tensor(image, height, width).numpy()


def decode_jpegs(encoded: list[torch.Tensor], read_mode: ImageReadMode, device: torch.device | str = "cpu") -> list:
    """torchvision's batched `decode_jpeg` of encoded files (n,) uint8 -> (C, H, W) uint8 each on `device`;
    a member it refuses is None (one bad member fails the batched call, so the batch is then decoded one by one)."""
    from torchvision.io import decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 announces a move of its decoders to torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(encoded, mode=read_mode, device=device))
        except RuntimeError:
            decoded = []
            for data in encoded:
                try:
                    decoded.append(decode_jpeg(data, mode=read_mode, device=device))
                except RuntimeError:
                    decoded.append(None)
            return decoded


def decode_image(data: bytes | BinaryIO | Path, size: int, mode: str, aspect: float = 1.0) -> np.ndarray | None:
    """Decodes one image to (size, round(size * aspect), C) uint8, C = 1 for mode "L" else 3; None if unreadable."""
    height, width = box_shape(size, aspect)
    if isinstance(data, Path) and data.suffix.lower() in (".jpg", ".jpeg"):
        try:
            data = data.read_bytes()  # JPEGs at the box size then take torchvision's decoder
        except OSError:
            return None
    if isinstance(data, bytes) and data[:2] == b"\xff\xd8":
        decoded = _decode_jpeg_at_box_size(data, mode, height, width)
        if decoded is not None:
            return decoded
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            if image.format == "JPEG":
                image.draft(mode, (width, height))  # DCT scaling: never below the box, much less work above it
            array = np.array(cover_and_crop(to_eight_bit(image).convert(mode), height, width), dtype=np.uint8)
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


def header_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from an encoded image's header (no pixel decoding), None when unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size[1], image.size[0]
    except DECODE_ERRORS:
        return None
