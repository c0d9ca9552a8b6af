"""Fingerprints of weight files, so a re-evaluation of the same weights is recognisable as such."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20
FINGERPRINT_HEX = 16  # 64 bits: collisions between a user's weight files are not a practical concern


def file_fingerprint(path: Path) -> str:
    """"sha256:" + the first 16 hex digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:FINGERPRINT_HEX]}"
