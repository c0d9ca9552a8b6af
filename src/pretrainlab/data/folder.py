"""`folder:PATH`: a folder of images, one subfolder per class, or flat (unlabeled).

Images are decoded once (in threads: PIL releases the GIL while decoding), resized so the
shorter side is `image_size`, centre-cropped square, and cached as uint8. Only regular files are
read (a FIFO or device would block forever); unreadable or truncated files, dangling symlinks,
symlink loops and decompression bombs (over PIL's pixel limit) are counted and reported, never a crash.

Images wider than 8 bits are scaled by their mode's range, never clipped: 16-bit (`I;16`) by 1/257;
32-bit integer (`I`) by 1/257 when its values lie in 0..65535 (how 16-bit data often arrives), else by
the image's own min..max; float (`F`) by 255 when its values lie in [0, 1], else by its own min..max.
An image with NaN or infinite pixels is skipped as unreadable.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pretrainlab.data.cache import cache_key, cached_array
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
DEFAULT_DECODE_SIZE = 64
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
GRAY_MODES = {"L", "1", "I", "F", "LA", *SIXTEEN_BIT_MODES}
DECODE_VERSION = 2  # part of the cache key: 2 scales 16-bit and float images instead of clipping them
# Errors a file can raise while opened or decoded; all make it a counted skip.
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def regular_image_files(candidates: list[Path]) -> tuple[list[Path], list[str]]:
    """(readable regular files, reasons for the others): symlinks are followed; a dangling one, a loop, a FIFO,
    socket or device is a reported skip (opening a FIFO would block forever); folders are not files."""
    files, skipped = [], []
    for path in candidates:
        try:
            mode = os.stat(path).st_mode  # follows symlinks: ENOENT when dangling, ELOOP in a loop
        except OSError as error:
            reason = "unreadable"
            if path.is_symlink():
                reason = "symlink loop" if error.errno == errno.ELOOP else "dangling symlink"
            skipped.append(f"{path} ({reason})")
            continue
        if stat.S_ISREG(mode):
            files.append(path)
        elif not stat.S_ISDIR(mode):
            skipped.append(f"{path} (not a regular file)")
    return files, skipped


def list_images(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None, list[str]]:
    """Returns (files, labels, class names, skipped entries with reasons); labels are None for a flat folder."""
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    skipped: list[str] = []
    class_files = []
    for folder in subfolders:
        files, skips = regular_image_files(sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES))
        class_files.append(files)
        skipped.extend(skips)
    if any(class_files):
        classes = [folder.name for folder, files in zip(subfolders, class_files, strict=True) if files]
        files, labels = [], []
        for label, files_of_class in enumerate(f for f in class_files if f):
            files.extend(files_of_class)
            labels.extend([label] * len(files_of_class))
        return files, labels, classes, skipped
    flat, flat_skipped = regular_image_files(sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
    return flat, None, None, skipped + flat_skipped


def to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float images as 8-bit "L", scaled by the mode's range (module docstring)."""
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


def decode_square(path: Path, size: int, mode: str) -> np.ndarray | None:
    """Decodes one file to (size, size, C) uint8, or None when it cannot be read."""
    try:
        with Image.open(path) as image:
            image = to_eight_bit(image).convert(mode)
            width, height = image.size
            scale = size / min(width, height)
            new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
            image = image.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=None)
            left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
            array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except DECODE_ERRORS:
        return None
    return array[..., None] if array.ndim == 2 else array


def is_grayscale(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return image.mode in GRAY_MODES
    except DECODE_ERRORS:
        return True  # unreadable files do not decide the colour mode


def decode_all(files: list[Path], size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images (M, size, size, C), readable mask (N,))."""
    with ThreadPoolExecutor() as pool:
        decoded = list(pool.map(lambda f: decode_square(f, size, mode), files))
    readable = np.array([array is not None for array in decoded], dtype=bool)
    channels = 1 if mode == "L" else 3
    images = np.zeros((int(readable.sum()), size, size, channels), dtype=np.uint8)
    for row, array in enumerate(a for a in decoded if a is not None):
        images[row] = array
    return images, readable


def load_folder(argument: str, image_size: int | None = None, **_: object) -> ImageSource:
    root = Path(argument).expanduser()
    if not root.is_dir():
        raise PretrainlabError(f"image folder not found: {root}")
    files, labels, classes, unlisted = list_images(root)
    if not files:
        found = f"; skipped {len(unlisted)}: {', '.join(unlisted[:3])}" if unlisted else ""
        raise PretrainlabError(
            f"no images in {root} (looked for regular files {', '.join(sorted(IMAGE_SUFFIXES))}, flat or one "
            f"subfolder per class{found})"
        )
    size = image_size or DEFAULT_DECODE_SIZE
    mode = "L" if all(is_grayscale(f) for f in files) else "RGB"
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    key = cache_key("folder", digest.hexdigest(), size, mode, DECODE_VERSION)
    decoded: dict[str, np.ndarray] = {}

    def decode_images() -> np.ndarray:
        images, decoded["readable"] = decode_all(files, size, mode)
        return images

    images = cached_array(key, decode_images)
    readable = cached_array(
        key + "-ok", lambda: decoded["readable"] if decoded else decode_all(files, size, mode)[1]
    )
    bad = unlisted + [f"{f} (unreadable, truncated or over the pixel limit)"
                      for f, ok in zip(files, readable, strict=True) if not ok]
    if len(images) == 0:
        raise PretrainlabError(f"none of the {len(files)} image files in {root} could be decoded "
                               f"(first: {', '.join(bad[:2])})")
    if bad:
        log.warning("skipped %d files in %s (first: %s)", len(bad), root, ", ".join(bad[:3]))
    label_array = None if labels is None else np.asarray(labels)[readable]
    return ImageSource(f"folder:{root}", ImageSet(images, label_array), classes=classes, skipped_files=len(bad))
