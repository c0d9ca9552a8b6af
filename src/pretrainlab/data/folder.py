"""`folder:PATH`: a folder of images, one subfolder per class, or flat (unlabeled).

Images are decoded once (in threads: PIL releases the GIL while decoding), resized so the
shorter side is `image_size`, centre-cropped square (or to a wider box, `aspect` = width / height, to keep
more of landscape photos for random-resized crops), and written chunk by chunk into the uint8 image cache,
so memory stays flat however many images the folder holds (data/image_cache.py). Only regular files are
read (a FIFO or device would block forever); unreadable or truncated files, dangling symlinks,
symlink loops and decompression bombs (over PIL's pixel limit) are counted and reported, never a crash.

Images wider than 8 bits are scaled by their mode's range, never clipped (data/decode.py, `to_eight_bit`).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image

from pretrainlab.data.cache import cache_key
from pretrainlab.data.decode import (  # noqa: F401
    DECODE_ERRORS,
    DECODE_VERSION,
    GRAY_MODES,
    box_shape,
    decode_image,
    to_eight_bit,
)
from pretrainlab.data.image_cache import DEFAULT_CHUNK, cached_images, threaded
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
DEFAULT_DECODE_SIZE = 64


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


def decode_square(path: Path, size: int, mode: str) -> np.ndarray | None:
    """Decodes one file to (size, size, C) uint8, or None when it cannot be read (data/decode.py)."""
    return decode_image(path, size, mode)


def is_grayscale(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return image.mode in GRAY_MODES
    except DECODE_ERRORS:
        return True  # unreadable files do not decide the colour mode


def decode_all(files: list[Path], size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images (M, size, size, C), readable mask (N,)), decoded in threads into one pre-allocated array."""
    channels = 1 if mode == "L" else 3
    images = np.zeros((len(files), size, size, channels), dtype=np.uint8)
    readable = np.zeros(len(files), dtype=bool)
    written = 0
    with threaded(lambda i: decode_square(files[i], size, mode)) as decode_chunk:
        for start in range(0, len(files), DEFAULT_CHUNK):
            for offset, array in enumerate(decode_chunk(start, min(len(files), start + DEFAULT_CHUNK))):
                if array is not None:
                    images[written] = array
                    written += 1
                    readable[start + offset] = True
    return images[:written], readable


def load_folder(argument: str, image_size: int | None = None, aspect: float = 1.0, **_: object) -> ImageSource:
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
    key = cache_key("folder", digest.hexdigest(), size, mode, DECODE_VERSION, *([aspect] if aspect != 1.0 else []))
    height, width = box_shape(size, aspect)
    with threaded(lambda index: decode_image(files[index], size, mode, aspect)) as decode_chunk:
        images, readable = cached_images(key, len(files), (height, width, 1 if mode == "L" else 3), decode_chunk,
                                         what=f"images of {root}")
    bad = unlisted + [f"{f} (unreadable, truncated or over the pixel limit)"
                      for f, ok in zip(files, readable, strict=True) if not ok]
    if len(images) == 0:
        raise PretrainlabError(f"none of the {len(files)} image files in {root} could be decoded "
                               f"(first: {', '.join(bad[:2])})")
    if bad:
        log.warning("skipped %d files in %s (first: %s)", len(bad), root, ", ".join(bad[:3]))
    label_array = None if labels is None else np.asarray(labels)[readable]
    return ImageSource(f"folder:{root}", ImageSet(images, label_array), classes=classes, skipped_files=len(bad))
