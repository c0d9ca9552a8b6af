"""`folder:PATH`: a folder of images, one subfolder per class, or flat (unlabeled).

Images are decoded once (in threads: PIL releases the GIL while decoding), resized so the
shorter side is `image_size`, centre-cropped square (or to a wider box, `aspect` = width / height, to keep
more of landscape photos for random-resized crops), and written chunk by chunk into the uint8 image cache,
so memory stays flat however many images the folder holds (data/image_cache.py). Unreadable or truncated
files are counted and reported, never a crash.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pretrainlab.data.cache import cache_key
from pretrainlab.data.decode import box_shape, decode_image
from pretrainlab.data.image_cache import DEFAULT_CHUNK, cached_images, threaded
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
DEFAULT_DECODE_SIZE = 64
GRAY_MODES = {"L", "1", "I", "I;16", "F", "LA"}


def list_images(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """Returns (files, labels, class names); labels are None for a flat folder."""
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_files = [
        sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) for folder in subfolders
    ]
    if any(class_files):
        classes = [folder.name for folder, files in zip(subfolders, class_files, strict=True) if files]
        files, labels = [], []
        for label, files_of_class in enumerate(f for f in class_files if f):
            files.extend(files_of_class)
            labels.extend([label] * len(files_of_class))
        return files, labels, classes
    flat = sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    return flat, None, None


def decode_square(path: Path, size: int, mode: str) -> np.ndarray | None:
    """Decodes one file to (size, size, C) uint8, or None when it cannot be read."""
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            width, height = image.size
            scale = size / min(width, height)
            new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
            image = image.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=None)
            left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
            array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    return array[..., None] if array.ndim == 2 else array


def is_grayscale(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return image.mode in GRAY_MODES
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
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
    files, labels, classes = list_images(root)
    if not files:
        raise PretrainlabError(
            f"no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, flat or one subfolder per class)"
        )
    size = image_size or DEFAULT_DECODE_SIZE
    mode = "L" if all(is_grayscale(f) for f in files) else "RGB"
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    key = cache_key("folder", digest.hexdigest(), size, mode, *([aspect] if aspect != 1.0 else []))
    height, width = box_shape(size, aspect)

    def decode_one(index: int) -> np.ndarray | None:
        if aspect == 1.0:
            return decode_square(files[index], size, mode)
        return decode_image(files[index], size, mode, aspect)

    with threaded(decode_one) as decode_chunk:
        images, readable = cached_images(key, len(files), (height, width, 1 if mode == "L" else 3), decode_chunk,
                                         what=f"images of {root}")
    skipped = int((~readable).sum())
    if skipped:
        bad = [str(f) for f, ok in zip(files, readable, strict=True) if not ok][:3]
        log.warning("skipped %d unreadable or truncated files in %s (first: %s)", skipped, root, ", ".join(bad))
    if len(images) == 0:
        raise PretrainlabError(f"none of the {len(files)} image files in {root} could be decoded")
    label_array = None if labels is None else np.asarray(labels)[readable]
    return ImageSource(f"folder:{root}", ImageSet(images, label_array), classes=classes, skipped_files=skipped)
