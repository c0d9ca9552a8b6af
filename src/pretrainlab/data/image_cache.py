"""Decoding into a pre-allocated cache file in bounded chunks: peak memory stays flat in the dataset size.

The cache is an ordinary `.npy` file (N, H, W, C) uint8. Its header is written first for the full image
count, the file is extended to its final size, and each chunk of decoded images is written at its offset
with plain file writes; only one chunk of decoded images is ever held in memory. (A writable memory map
would do the same job, but every page it touches stays counted in the process's resident memory until the
map is closed, so RSS would grow with the dataset.) Files that fail to decode are left out and the rows
after them move up; at the end the header is rewritten for the images actually written. numpy pads
`.npy` headers so that the first dimension can change without moving the data, which makes this exact.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pretrainlab.data.cache import MEMMAP_THRESHOLD_BYTES, cache_dir, cache_key
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

ChunkDecoder = Callable[[int, int], Sequence[np.ndarray | None]]
DEFAULT_CHUNK = 1024
PROGRESS_SECONDS = 10.0


def _header(shape: tuple[int, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@contextmanager
def threaded(decode_one: Callable[[int], np.ndarray | None], workers: int | None = None) -> Iterator[ChunkDecoder]:
    """A chunk decoder that decodes images start..stop-1 in threads (PIL and libjpeg release the GIL)."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        yield lambda start, stop: list(pool.map(decode_one, range(start, stop)))


def write_image_cache(path: Path, count: int, row_shape: tuple[int, int, int], decode_chunk: ChunkDecoder,
                      chunk: int = DEFAULT_CHUNK, what: str = "images") -> np.ndarray:
    """Decodes `count` images into the `.npy` file `path`, `chunk` at a time; returns the readable mask (count,).

    `decode_chunk(start, stop)` returns the images start..stop-1, each (H, W, C) uint8 of `row_shape` or None
    when unreadable. The file appears at `path` only when complete (temporary file, then a rename).
    """
    header = _header((count, *row_shape))
    row_bytes = int(np.prod(row_shape))
    readable = np.zeros(count, dtype=bool)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    written, started, reported = 0, time.perf_counter(), time.perf_counter()
    try:
        with open(tmp, "wb") as handle:
            handle.write(header)
            handle.truncate(len(header) + count * row_bytes)  # pre-allocated (sparse until written)
            for start in range(0, count, chunk):
                images = decode_chunk(start, min(count, start + chunk))
                good = [image for image in images if image is not None]
                readable[start : start + len(images)] = [image is not None for image in images]
                if good:
                    block = np.stack(good)  # (n, H, W, C): the only decoded images held in memory
                    if block.shape[1:] != row_shape:
                        raise PretrainlabError(f"{what}: decoded shape {block.shape[1:]} differs from the first "
                                               f"images' {row_shape}; all images must decode to one size")
                    os.pwrite(handle.fileno(), block.tobytes(), len(header) + written * row_bytes)
                    written += len(good)
                if time.perf_counter() - reported > PROGRESS_SECONDS:
                    reported = time.perf_counter()
                    done = min(count, start + chunk)
                    log.info("decoded %d / %d %s (%.0f images/s)", done, count, what, done / (reported - started))
            if written < count:  # unreadable files were left out: shrink the file and restate its shape
                smaller = _header((written, *row_shape))
                assert len(smaller) == len(header), "numpy pads .npy headers for a changing first dimension"
                handle.truncate(len(header) + written * row_bytes)
                os.pwrite(handle.fileno(), smaller, 0)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - started
    log.info("decoded %d %s into %s in %.1f s (%.0f images/s)", count, what, path, seconds, count / max(seconds, 1e-9))
    return readable


def cache_hit(key: str) -> bool:
    return (cache_dir() / f"{key}.npy").exists() and (cache_dir() / f"{key}-ok.npy").exists()


def cached_images(key: str, count: int, row_shape: tuple[int, int, int], decode_chunk: ChunkDecoder,
                  chunk: int = DEFAULT_CHUNK, what: str = "images") -> tuple[np.ndarray, np.ndarray]:
    """(images (M, H, W, C) uint8, readable mask (count,)) cached under `key`, decoding on a miss.

    Caches above `MEMMAP_THRESHOLD_BYTES` are served memory-mapped (read-only), smaller ones loaded in RAM.
    """
    path, mask_path = cache_dir() / f"{key}.npy", cache_dir() / f"{key}-ok.npy"
    if not cache_hit(key):
        readable = write_image_cache(path, count, row_shape, decode_chunk, chunk, what)
        tmp = mask_path.with_name(f"{mask_path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, readable)
        os.replace(tmp, mask_path)
    return load_cached_images(key)


def load_cached_images(key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, readable mask) of a complete cache entry; memory-mapped above `MEMMAP_THRESHOLD_BYTES`."""
    path = cache_dir() / f"{key}.npy"
    big = path.stat().st_size > MEMMAP_THRESHOLD_BYTES
    return np.load(path, mmap_mode="r" if big else None), np.load(cache_dir() / f"{key}-ok.npy")


def take_rows(images: np.ndarray, indices: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """`images[indices]` as a new array; for a memory-mapped cache, copied chunk by chunk into a cache file of its
    own (memory-mapped in turn), so a train/test split of a dataset larger than memory stays out of memory.

    Pages of the source map read for a chunk are released from this process afterwards (MADV_DONTNEED: they
    stay in the page cache), so resident memory does not grow with the rows copied.
    """
    mapped = getattr(images, "_mmap", None)
    if not isinstance(images, np.memmap) or images.filename is None or mapped is None:
        return np.ascontiguousarray(images[indices])
    stat = os.stat(images.filename)
    digest = hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()
    key = cache_key("rows", images.filename, stat.st_mtime_ns, images.shape, digest)

    def copy_chunk(start: int, stop: int) -> list[np.ndarray]:
        rows = np.array(images[indices[start:stop]])  # (n, H, W, C) copied out of the map
        with contextlib.suppress(OSError, ValueError):  # best effort: not every platform has madvise
            mapped.madvise(mmap.MADV_DONTNEED)
        return list(rows)

    return cached_images(key, len(indices), tuple(images.shape[1:]), copy_chunk, chunk, what="split images")[0]
