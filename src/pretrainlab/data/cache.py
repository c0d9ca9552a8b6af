"""Decode once, keep uint8: a memory-mapped .npy cache for decoded datasets."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Above this many bytes a decoded array is served memory-mapped rather than loaded in RAM.
MEMMAP_THRESHOLD_BYTES = 512 * 2**20


def cache_dir() -> Path:
    root = os.environ.get("PRETRAINLAB_CACHE") or Path.home() / ".cache" / "pretrainlab"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def file_fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def cached_array(key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """Returns the array stored under `key`, building and saving it atomically on a miss."""
    path = cache_dir() / f"{key}.npy"
    if not path.exists():
        array = build()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    if path.stat().st_size > MEMMAP_THRESHOLD_BYTES:
        return np.load(path, mmap_mode="r")
    return np.load(path)
