"""`pairs:PATH`: images that come in pairs (two views of one scene), for cross-view methods such as CroCo.

A pair source is an ordinary source whose training images are the first image of every pair; the second
image travels alongside as the aligned extra array "partners" (`ImageSet.extras`), reaches the method in
`Batch.extra["partners"]` with each batch, and is ignored by every method that does not ask for it. Views,
evaluation and channel statistics therefore work on a pair source unchanged.

Two layouts:
- an npz archive with `x1` and `x2` (N, H, W[, C]) uint8 arrays of equal shape (optional `y` labels);
- a folder with one subfolder per scene holding at least two images; the sorted images of a scene give
  the pairs (1st, 2nd), (2nd, 3rd), ... so a scene of two images is one pair.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from pretrainlab.data.cache import cache_key, cached_array
from pretrainlab.data.folder import DEFAULT_DECODE_SIZE, IMAGE_SUFFIXES, decode_all, is_grayscale
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

PARTNERS = "partners"
NPZ_LAYOUT = "x1 and x2 (N,H,W[,C]) uint8 arrays of equal shape, optional y (N,)"


def _as_images(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        array = (array * 255.0 if array.max() <= 1.0 else array).clip(0, 255).astype(np.uint8)
    return array[..., None] if array.ndim == 3 else array


def load_pairs_npz(path: Path) -> ImageSet:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise PretrainlabError(f"cannot read {path} as an npz archive: {error}") from None
    with archive:
        if "x1" not in archive.files or "x2" not in archive.files:
            raise PretrainlabError(f"pair npz {path} has keys {sorted(archive.files)}; expected {NPZ_LAYOUT}")
        first, second = _as_images(archive["x1"]), _as_images(archive["x2"])
        labels = archive["y"] if "y" in archive.files else None
    if first.shape != second.shape:
        raise PretrainlabError(f"pair npz {path}: x1 {first.shape} and x2 {second.shape} must have one shape")
    return ImageSet(first, labels, {PARTNERS: second})


def scene_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(first, second) files of every pair: consecutive sorted images inside each scene subfolder."""
    pairs, lonely = [], []
    for scene in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in scene.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            lonely.append(scene.name)
        pairs.extend(zip(files[:-1], files[1:], strict=True))
    if lonely:
        log.warning("skipped %d scene folders with fewer than two images in %s (first: %s)", len(lonely), root,
                    ", ".join(lonely[:3]))
    return pairs


def load_pairs_folder(root: Path, size: int) -> ImageSet:
    pairs = scene_pairs(root)
    if not pairs:
        raise PretrainlabError(f"no image pairs in {root}: expected one subfolder per scene holding two images")
    files = [f for pair in pairs for f in pair]  # first, second, first, second, ...
    mode = "L" if all(is_grayscale(f) for f in files) else "RGB"
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    key = cache_key("pairs", digest.hexdigest(), size, mode)

    def decode_pairs() -> np.ndarray:
        images, readable = decode_all(files, size, mode)
        if not readable.all():
            bad = [str(f) for f, ok in zip(files, readable, strict=True) if not ok][:3]
            raise PretrainlabError(f"unreadable images in pair folder {root} (first: {', '.join(bad)})")
        return images.reshape(len(pairs), 2, size, size, images.shape[-1])  # (N, 2, S, S, C)

    stacked = cached_array(key, decode_pairs)
    return ImageSet(np.ascontiguousarray(stacked[:, 0]), None, {PARTNERS: np.ascontiguousarray(stacked[:, 1])})


def load_pairs(argument: str, image_size: int | None = None, **_: object) -> ImageSource:
    path = Path(argument).expanduser()
    if path.is_file():
        train = load_pairs_npz(path)
    elif path.is_dir():
        train = load_pairs_folder(path, image_size or DEFAULT_DECODE_SIZE)
    else:
        raise PretrainlabError(f"pair dataset not found: {path} (an npz with {NPZ_LAYOUT}, or a folder of scenes)")
    return ImageSource(f"pairs:{path}", train)
