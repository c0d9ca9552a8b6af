"""`npz:PATH`: numpy archives, as arrays (x_train/y_train/x_test/y_test) or as JPEG bytes with offsets.

Image arrays are uint8 (taken as they are), uint16 (scaled by 1/257), other integers in 0..255, booleans
(0 or 255), or floats in [0, 1] (scaled by 255) or [0, 255]; anything else (text, objects, complex numbers,
NaN, values outside those ranges, a split without images) is a one-line error, never silently clipped.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode

from pretrainlab.data.boxes import BOXES
from pretrainlab.data.cache import cache_key, file_fingerprint
from pretrainlab.data.decode import decode_jpegs
from pretrainlab.data.image_cache import ChunkDecoder, cache_hit, cached_images, load_cached_images
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

ARRAY_LAYOUT = ("x_train (N,H,W[,C]) uint8, optional y_train (N,), optional x_test/y_test, optional "
                "boxes_train/boxes_test (N,M,5) of (class + 1, x0, y0, x1, y1) with classes")
JPEG_LAYOUT = "jpeg_train (bytes) + offsets_train (N+1,), optional y_train, jpeg_test/offsets_test/y_test, classes"
PIXEL_TYPES = "uint8 0..255, uint16 0..65535, or floats in [0, 1] or [0, 255]"


def read_array(archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """One member of the archive, with one-line errors for object arrays and damaged members."""
    try:
        return archive[key]
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise PretrainlabError(f"npz array '{key}' holds Python objects, which are never unpickled; store plain "
                                   f"numbers ({PIXEL_TYPES} for images, integers for labels)") from None
        raise PretrainlabError(f"npz array '{key}' cannot be read ({error})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise PretrainlabError(f"npz array '{key}' is damaged ({error})") from None


def as_uint8_images(images: np.ndarray, key: str) -> np.ndarray:
    """uint8 images from an array of any pixel type the module docstring lists, scaled by its range."""
    if images.dtype.kind not in "uifb":
        raise PretrainlabError(f"npz array '{key}' holds {images.dtype} values; images must be {PIXEL_TYPES}")
    if images.size == 0:
        raise PretrainlabError(f"npz array '{key}' holds no images (shape {images.shape})")
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind == "b":
        return images.astype(np.uint8) * 255
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise PretrainlabError(f"npz array '{key}' has {int((~np.isfinite(images)).sum())} NaN or infinite pixels; "
                               f"images must be {PIXEL_TYPES}")
    low, high = images.min(), images.max()
    if images.dtype == np.uint16:
        return ((images.astype(np.uint32) + 128) // 257).astype(np.uint8)  # 65535 -> 255, rounded
    if images.dtype.kind == "f" and low >= 0 and high <= 1:
        return np.rint(images * 255.0).astype(np.uint8)
    if low >= 0 and high <= 255:
        return np.rint(images).astype(np.uint8) if images.dtype.kind == "f" else images.astype(np.uint8)
    raise PretrainlabError(f"npz array '{key}' ({images.dtype}) spans {low:.4g}..{high:.4g}; images must be "
                           f"{PIXEL_TYPES} (normalised arrays: store the raw pixels)")


def jpeg_chunk_decoder(data: np.ndarray, offsets: np.ndarray) -> ChunkDecoder:
    """Decodes images start..stop-1 of concatenated JPEG files with torchvision (one call per chunk)."""

    def decode_chunk(start: int, stop: int) -> list[np.ndarray | None]:
        encoded = [torch.from_numpy(data[offsets[i] : offsets[i + 1]].copy()) for i in range(start, stop)]
        decoded = decode_jpegs(encoded, ImageReadMode.RGB)  # a damaged file is None: a counted skip
        return [None if image is None else image.permute(1, 2, 0).numpy() for image in decoded]  # (H, W, 3) each

    return decode_chunk


def decode_jpeg_split(data: np.ndarray, offsets: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated JPEG files decoded into the image cache (N, H, W, 3), 4,096 at a time; one size for all.

    Returns (images, readable mask (N,)): a file that does not decode is left out and counted.
    """
    decode_chunk = jpeg_chunk_decoder(data, offsets)
    first = next((image for image in decode_chunk(0, min(len(offsets) - 1, 64)) if image is not None), None)
    if first is None:
        raise PretrainlabError("none of the first JPEG files of the npz decodes")
    return cached_images(key, len(offsets) - 1, first.shape, decode_chunk, chunk=4096, what="JPEG images of the npz")


def _split_from_arrays(archive: np.lib.npyio.NpzFile, split: str) -> ImageSet | None:
    if f"x_{split}" not in archive.files:
        return None
    images = as_uint8_images(read_array(archive, f"x_{split}"), f"x_{split}")
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    labels = read_array(archive, f"y_{split}") if f"y_{split}" in archive.files else None
    extras = {BOXES: read_array(archive, f"boxes_{split}")} if f"boxes_{split}" in archive.files else {}
    return ImageSet(images, labels, extras)  # boxes are checked by the protocols that read them (data/boxes.py)


def _split_from_jpeg(archive: np.lib.npyio.NpzFile, split: str, fingerprint: str) -> ImageSet | None:
    if f"jpeg_{split}" not in archive.files:
        return None
    if f"offsets_{split}" not in archive.files:
        raise PretrainlabError(f"npz has 'jpeg_{split}' but no 'offsets_{split}'; expected layout: {JPEG_LAYOUT}")
    key = cache_key("npz-jpeg", fingerprint, split)
    if cache_hit(key):  # the encoded bytes are not even read
        images, readable = load_cached_images(key)
    else:
        images, readable = decode_jpeg_split(read_array(archive, f"jpeg_{split}"),
                                             read_array(archive, f"offsets_{split}"), key)
    if not readable.all():
        log.warning("skipped %d JPEG files of the npz's %s split that do not decode", int((~readable).sum()), split)
    labels = read_array(archive, f"y_{split}") if f"y_{split}" in archive.files else None
    if labels is not None and len(labels) == len(readable):  # (a length mismatch is ImageSet's one-line error)
        labels = labels[readable]
    return ImageSet(images, labels)


def load_npz(argument: str, **_: object) -> ImageSource:
    path = Path(argument).expanduser()
    if not path.is_file():
        raise PretrainlabError(f"npz file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise PretrainlabError(f"cannot read {path} as an npz archive: {error}") from None
    with archive:
        if "x_train" in archive.files:
            train, test = _split_from_arrays(archive, "train"), _split_from_arrays(archive, "test")
        elif "jpeg_train" in archive.files:
            fingerprint = file_fingerprint(path)
            train = _split_from_jpeg(archive, "train", fingerprint)
            test = _split_from_jpeg(archive, "test", fingerprint)
        else:
            raise PretrainlabError(
                f"npz {path} has keys {sorted(archive.files)}; expected one of two layouts: "
                f"({ARRAY_LAYOUT}) or ({JPEG_LAYOUT})"
            )
        classes = [str(name) for name in read_array(archive, "classes")] if "classes" in archive.files else None
    return ImageSource(f"npz:{path}", train, test, classes=classes)
