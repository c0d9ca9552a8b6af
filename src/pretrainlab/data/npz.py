"""`npz:PATH`: numpy archives, as arrays (x_train/y_train/x_test/y_test) or as JPEG bytes with offsets."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from pretrainlab.data.cache import cache_key, file_fingerprint
from pretrainlab.data.image_cache import ChunkDecoder, cache_hit, cached_images, load_cached_images
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

ARRAY_LAYOUT = "x_train (N,H,W[,C]) uint8, optional y_train (N,), optional x_test/y_test"
JPEG_LAYOUT = "jpeg_train (bytes) + offsets_train (N+1,), optional y_train, jpeg_test/offsets_test/y_test, classes"


def jpeg_chunk_decoder(data: np.ndarray, offsets: np.ndarray) -> ChunkDecoder:
    """Decodes images start..stop-1 of concatenated JPEG files with torchvision (one call per chunk)."""

    def decode_chunk(start: int, stop: int) -> list[np.ndarray | None]:
        encoded = [torch.from_numpy(data[offsets[i] : offsets[i + 1]].copy()) for i in range(start, stop)]
        with warnings.catch_warnings():  # torchvision 0.29 announces a move of its decoders to torchcodec
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB)
        return [image.permute(1, 2, 0).numpy() for image in decoded]  # (H, W, 3) each

    return decode_chunk


def decode_jpeg_split(data: np.ndarray, offsets: np.ndarray, key: str) -> np.ndarray:
    """Concatenated JPEG files decoded into the image cache (N, H, W, 3), 4,096 at a time; one size for all."""
    decode_chunk = jpeg_chunk_decoder(data, offsets)
    shape = decode_chunk(0, 1)[0].shape
    images, _ = cached_images(key, len(offsets) - 1, shape, decode_chunk, chunk=4096, what="JPEG images of the npz")
    return images


def _split_from_arrays(archive: np.lib.npyio.NpzFile, split: str) -> ImageSet | None:
    if f"x_{split}" not in archive.files:
        return None
    images = archive[f"x_{split}"]
    if images.dtype != np.uint8:
        if images.max() <= 1.0:  # float images in [0, 1]
            images = images * 255.0
        images = images.clip(0, 255).astype(np.uint8)
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    labels = archive[f"y_{split}"] if f"y_{split}" in archive.files else None
    return ImageSet(images, labels)


def _split_from_jpeg(archive: np.lib.npyio.NpzFile, split: str, fingerprint: str) -> ImageSet | None:
    if f"jpeg_{split}" not in archive.files:
        return None
    if f"offsets_{split}" not in archive.files:
        raise PretrainlabError(f"npz has 'jpeg_{split}' but no 'offsets_{split}'; expected layout: {JPEG_LAYOUT}")
    key = cache_key("npz-jpeg", fingerprint, split)
    if cache_hit(key):  # the encoded bytes are not even read
        images = load_cached_images(key)[0]
    else:
        images = decode_jpeg_split(archive[f"jpeg_{split}"], archive[f"offsets_{split}"], key)
    labels = archive[f"y_{split}"] if f"y_{split}" in archive.files else None
    return ImageSet(images, labels)


def load_npz(argument: str, **_: object) -> ImageSource:
    path = Path(argument).expanduser()
    if not path.is_file():
        raise PretrainlabError(f"npz file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
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
        classes = [str(name) for name in archive["classes"]] if "classes" in archive.files else None
    return ImageSource(f"npz:{path}", train, test, classes=classes)
