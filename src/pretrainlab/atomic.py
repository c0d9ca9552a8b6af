"""Writing outputs: atomic file writes (a temporary file next to the target, then a rename over it), and the
up-front check that an output path can be written at all (so bad paths fail before any work, in one line)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pretrainlab.errors import PretrainlabError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path; on success it replaces `path` in one rename, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # some writers create 0600 temporary files
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(folder: Path, flag: str = "--out") -> None:
    """Creates and deletes a file in `folder`: the only test that holds for root, read-only mounts and /sys."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PretrainlabError(f"{flag}: cannot write into {folder} ({error.strerror or error}); "
                               f"choose a {flag} in a folder you can write to") from None


def nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_path(path: Path, flag: str, want_folder: bool) -> None:
    """`path` can be created or replaced: it is not the wrong kind of thing, not under a file, and writable."""
    path = Path(path)
    if path.exists() and path.is_dir() != want_folder:
        kind, wanted = ("a folder", "a file path") if path.is_dir() else ("a file", "a folder path")
        raise PretrainlabError(f"{flag} {path} is {kind}; give {wanted}")
    parent = nearest_existing(path if want_folder else path.parent)
    if not parent.is_dir():
        raise PretrainlabError(f"{flag} {path} lies under the file {parent}; choose a path under a folder")
    check_writable(parent, flag)
