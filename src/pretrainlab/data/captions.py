"""`captions:PATH` and `captions:SPEC`: images with one or more captions each, for image-text methods.

Two kinds of argument:
- a CSV (header with an image column `image`/`image_path`/`path`/`file`/`filename` and a caption column
  `caption`/`text`) or a JSONL file (one object per line: an image key as above and `caption` (a string)
  or `captions` (a list)). Image paths are relative to the file's folder unless absolute. Several rows
  may name one image: its captions are gathered. Bad rows (malformed line, missing column, empty
  caption, missing or unreadable image) are counted by reason and reported, never a crash; a file with
  no usable row stops with a one-line error. A fixed random 20 % test split (seed 0) is made.
- another data spec (`captions:composed:builtin`, `captions:builtin`, `captions:npz:PATH`): SYNTHETIC
  captions generated from what the source knows (data/synthetic_captions.py): the objects and their
  relations on composed canvases, prompt templates of the class name on labelled images.

Captions travel with their images as two aligned extra arrays (`ImageSet.extras`), so subsets, splits,
DDP slicing and the loader handle them like any other per-image array:
- `captions`: uint8 (N, K, L), the UTF-8 bytes of up to K captions per image, zero-padded to L bytes;
- `caption_counts`: int64 (N,), how many of the K rows hold a caption.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from pretrainlab.data.cache import cache_key, cached_array
from pretrainlab.data.folder import DECODE_VERSION, DEFAULT_DECODE_SIZE, decode_all, is_grayscale
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.data.splits import SPLIT_SEED, TEST_FRACTION, stratified_indices
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

CAPTIONS = "captions"
CAPTION_COUNTS = "caption_counts"
MAX_CAPTION_BYTES = 256  # longer captions are cut (at a character boundary) and counted
IMAGE_KEYS = ("image", "image_path", "path", "file", "filename")
CAPTION_KEYS = ("caption", "text")
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def encode_captions(caption_lists: list[list[str]], max_bytes: int = MAX_CAPTION_BYTES
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Lists of captions per image -> (uint8 (N, K, L) padded UTF-8 bytes, int64 (N,) counts)."""
    encoded = [[text.encode("utf-8")[:max_bytes] for text in captions] for captions in caption_lists]
    width = max((len(b) for captions in encoded for b in captions), default=1)
    most = max((len(captions) for captions in encoded), default=1)
    array = np.zeros((len(encoded), max(most, 1), max(width, 1)), dtype=np.uint8)
    for row, captions in enumerate(encoded):
        for column, data in enumerate(captions):
            array[row, column, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    return array, np.array([len(captions) for captions in encoded], dtype=np.int64)


def decode_caption(data: np.ndarray | torch.Tensor) -> str:
    """One padded byte row (L,) -> the caption (a cut multi-byte character is dropped)."""
    raw = bytes(np.asarray(data, dtype=np.uint8).tobytes()).rstrip(b"\0")
    return raw.decode("utf-8", errors="ignore")


def image_captions(images: ImageSet) -> list[list[str]] | None:
    """Every image's captions, or None when the split carries none."""
    if CAPTIONS not in images.extras:
        return None
    array, counts = images.extras[CAPTIONS], images.extras[CAPTION_COUNTS]
    return [[decode_caption(array[row, column]) for column in range(int(counts[row]))] for row in range(len(array))]


def caption_texts(images: ImageSet) -> tuple[str, ...]:
    """All captions of a split, flattened in image order (empty when it has none): builds tokenizers."""
    return tuple(text for captions in image_captions(images) or [] for text in captions)


def has_captions(source: ImageSource) -> bool:
    return CAPTIONS in source.train.extras and (source.test is None or CAPTIONS in source.test.extras)


def choose_captions(captions: torch.Tensor, counts: torch.Tensor, generator: torch.Generator | None) -> list[str]:
    """One caption per image, uniformly among its own: captions (B, K, L) uint8, counts (B,) -> B strings.

    Drawn from the step's generator, so a resumed run sees the captions an uninterrupted one would.
    """
    draws = torch.rand(len(counts), generator=generator, device=generator.device if generator else None)
    chosen = (draws.cpu() * counts.cpu().clamp(min=1)).long().clamp(max=captions.shape[1] - 1)  # (B,)
    rows = captions.cpu()[torch.arange(len(counts)), chosen].numpy()  # (B, L)
    return [decode_caption(row) for row in rows]


def caption_ids(texts: list[str], device: torch.device | None = None) -> torch.Tensor:
    """A stable 63-bit id per caption text (B,): equal texts share one, on every process and every run."""
    values = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") >> 1 for t in texts]
    return torch.tensor(values, dtype=torch.int64, device=device)


def with_captions(images: ImageSet, caption_lists: list[list[str]]) -> ImageSet:
    """`images` with its captions attached as extras (a new ImageSet; the arrays are shared)."""
    array, counts = encode_captions(caption_lists)
    extras = {**images.extras, CAPTIONS: array, CAPTION_COUNTS: counts}
    return ImageSet(images.images, images.labels, extras, images.masks, images.multilabels)


# -- caption files ---------------------------------------------------------------------------------
def _first_key(row: dict, keys: tuple[str, ...]) -> str | None:
    return next((key for key in keys if key in row), None)


def read_rows(path: Path, bad: Counter) -> list[tuple[str, list[str]]]:
    """(image path text, captions) per usable row of a CSV/TSV or JSONL file; bad rows counted in `bad`."""
    rows: list[tuple[str, list[str]]] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".csv", ".tsv"):
        records: list = list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ","))
        header = records[0].keys() if records else []
        if records and (_first_key(dict.fromkeys(header), IMAGE_KEYS) is None
                        or _first_key(dict.fromkeys(header), CAPTION_KEYS) is None):
            raise PretrainlabError(f"caption file {path} has columns {sorted(k for k in header if k)}; it needs an "
                                   f"image column ({'/'.join(IMAGE_KEYS)}) and a caption column "
                                   f"({'/'.join(CAPTION_KEYS)})")
    else:
        records = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                bad["malformed line"] += 1
    for record in records:
        image_key = _first_key(record, IMAGE_KEYS)
        values = record.get("captions") if isinstance(record.get("captions"), list) else [
            record.get(_first_key(record, CAPTION_KEYS) or "caption")]
        if image_key is None or not isinstance(record[image_key], str) or not record[image_key].strip():
            bad["no image path"] += 1
            continue
        captions = [value.strip() for value in values if isinstance(value, str) and value.strip()]
        if not captions:
            bad["empty caption"] += 1
            continue
        rows.append((record[image_key].strip(), captions))
    return rows


def group_by_image(path: Path, rows: list[tuple[str, list[str]]], bad: Counter) -> dict[Path, list[str]]:
    """Resolved image file -> its captions (first-seen order); rows naming a missing file are counted."""
    grouped: dict[Path, list[str]] = {}
    for image_text, captions in rows:
        image = Path(image_text).expanduser()
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            bad["missing image"] += 1
            continue
        grouped.setdefault(image, []).extend(captions)
    return grouped


def decode_images(files: list[Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images of the readable files (M, size, size, C), readable mask (N,)), cached like folder: sources."""
    mode = "L" if all(is_grayscale(f) for f in files) else "RGB"
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    key = cache_key("captions", digest.hexdigest(), size, mode, DECODE_VERSION)
    decoded: dict[str, np.ndarray] = {}

    def decode() -> np.ndarray:
        pixels, decoded["readable"] = decode_all(files, size, mode)
        return pixels

    images = cached_array(key, decode)
    readable = cached_array(key + "-ok", lambda: decoded["readable"] if decoded else decode_all(files, size, mode)[1])
    return images, readable.astype(bool)


def load_caption_file(path: Path, image_size: int | None) -> ImageSource:
    bad: Counter = Counter()
    grouped = group_by_image(path, read_rows(path, bad), bad)
    files = list(grouped)
    images, readable = np.zeros((0, 1, 1, 1), dtype=np.uint8), np.zeros(0, dtype=bool)
    if files:
        images, readable = decode_images(files, image_size or DEFAULT_DECODE_SIZE)
        bad["unreadable image"] += int(sum(len(grouped[f]) for f, ok in zip(files, readable, strict=True) if not ok))
    bad = +bad  # drop zero counts
    if len(images) == 0:
        found = f"; bad rows: {dict(bad)}" if bad else ""
        raise PretrainlabError(f"caption file {path} has no readable rows (image path + non-empty caption "
                               f"naming an existing, decodable image){found}")
    if bad:
        log.warning("skipped %d bad rows of %s: %s", sum(bad.values()), path,
                    ", ".join(f"{count} {reason}" for reason, count in bad.items()))
    caption_lists = [grouped[f] for f, ok in zip(files, readable, strict=True) if ok]
    full = with_captions(ImageSet(images), caption_lists)
    train_idx, test_idx = stratified_indices(np.zeros(len(full), dtype=np.int64), TEST_FRACTION, SPLIT_SEED)
    source = ImageSource(f"captions:{path}", full.subset(train_idx), full.subset(test_idx) if len(full) > 1 else None,
                         skipped_files=sum(bad.values()),
                         split_note=f"random {int(TEST_FRACTION * 100)}% test split, seed {SPLIT_SEED}")
    source.extra["bad_rows"] = dict(bad)
    source.extra["captions"] = sum(len(c) for c in caption_lists)
    return source


def load_captions(argument: str, image_size: int | None = None, download: bool = False, **_: object) -> ImageSource:
    from pretrainlab.data.spec import DATA_KINDS, load_source  # spec.py registers this loader
    from pretrainlab.data.synthetic_captions import caption_source

    path = Path(argument).expanduser()
    if path.suffix.lower() in FILE_SUFFIXES:
        if not path.is_file():
            raise PretrainlabError(f"caption file not found: {path}")
        return load_caption_file(path, image_size)
    kind = argument.partition(":")[0]
    if not argument or kind not in DATA_KINDS or kind == "captions":
        raise PretrainlabError(f"captions:{argument}: give a caption file (.csv, .tsv, .jsonl) or a labelled or "
                               "composed data spec to caption synthetically, e.g. captions:composed:builtin")
    return caption_source(load_source(argument, image_size=image_size, download=download))
