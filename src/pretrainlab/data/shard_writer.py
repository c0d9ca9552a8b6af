"""`pretrainlab shard SPEC --out DIR`: a dataset written as WebDataset tar shards (image bytes + label + key).

Encoded files are copied byte for byte (a folder's JPEGs, an npz's JPEG bytes); decoded arrays (npz arrays,
builtin, torchvision sets) are stored as lossless PNG. Samples are written in a seeded random order, so a
shard is a random draw of the whole set and a small shuffle buffer suffices when streaming. A labelled source
without a test split gets the same fixed stratified split as `--data` (data/splits.py), written as `test-*`.
The `index.json` written last lists every shard with its sample count; a folder without it is unfinished.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pretrainlab.atomic import atomic_path
from pretrainlab.data.decode import GRAY_MODES, header_size, image_mode
from pretrainlab.data.shards import INDEX_FORMAT, INDEX_NAME
from pretrainlab.data.splits import SPLIT_SEED, TEST_FRACTION, stratified_indices
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
              "GIB": 2**30}


@dataclass
class EncodedSplit:
    """A split as encoded images: `read(i)` -> (extension, bytes) or None when the file cannot be read."""

    read: Callable[[int], tuple[str, bytes] | None]
    count: int
    labels: np.ndarray | None


@dataclass
class EncodedSource:
    splits: dict[str, EncodedSplit]
    classes: list[str] | None
    mode: str
    image_size: list[int] | None  # (H, W) when every image has it, else None
    split_note: str = "given"


def parse_size(text: str) -> int:
    """'1GB' -> 10**9 bytes; KB/MB/GB are powers of 10, KiB/MiB/GiB of 2."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).upper() not in SIZE_UNITS or float(match.group(1)) <= 0:
        raise PretrainlabError(f"--shard-size '{text}' is not a size; use e.g. 1GB, 500MB or 64MiB")
    return max(1, int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()]))


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def folder_source(root: Path) -> EncodedSource:
    """A folder's files as they are on disk (the files `folder:` would decode, the same class names)."""
    from pretrainlab.data.folder import IMAGE_SUFFIXES, list_images

    if not root.is_dir():
        raise PretrainlabError(f"image folder not found: {root}")
    files, labels, classes = list_images(root)[:3]  # (a fourth item, when present, lists skipped entries)
    if not files:
        raise PretrainlabError(f"no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")

    def read(i: int) -> tuple[str, bytes] | None:
        try:
            return files[i].suffix.lower().lstrip("."), files[i].read_bytes()
        except OSError as error:
            log.warning("skipped %s: %s", files[i], error)
            return None

    mode = "L" if all(image_mode(f) in GRAY_MODES | {None} for f in files) else "RGB"
    label_array = None if labels is None else np.asarray(labels, dtype=np.int64)
    return EncodedSource({"train": EncodedSplit(read, len(files), label_array)}, classes, mode, None)


def npz_source(path: Path) -> EncodedSource:
    """An npz archive: JPEG bytes copied as they are, pixel arrays encoded as PNG."""
    from pretrainlab.data.npz import load_npz

    if not path.is_file():
        raise PretrainlabError(f"npz file not found: {path}")
    with np.load(path, allow_pickle=False) as archive:
        if "jpeg_train" not in archive.files:  # pixel arrays: decoded by the npz source, then encoded
            return decoded_source(load_npz(str(path)))
        splits = {}
        for split in ("train", "test"):
            if f"jpeg_{split}" not in archive.files:
                continue
            data, offsets = archive[f"jpeg_{split}"], archive[f"offsets_{split}"]
            labels = archive[f"y_{split}"].astype(np.int64) if f"y_{split}" in archive.files else None
            splits[split] = EncodedSplit(
                lambda i, d=data, o=offsets: ("jpg", d[o[i] : o[i + 1]].tobytes()), len(offsets) - 1, labels)
        classes = [str(name) for name in archive["classes"]] if "classes" in archive.files else None
    return EncodedSource(splits, classes, "RGB", None)


def decoded_source(source: object) -> EncodedSource:
    """Any loaded `ImageSource` (decoded arrays), each image stored as lossless PNG."""
    splits = {}
    for split in ("train", "test"):
        images = getattr(source, split)
        if images is None:
            continue
        if images.multilabels is not None:
            raise PretrainlabError("multi-label sources cannot be sharded: a shard sample holds one class in .cls")
        splits[split] = EncodedSplit(lambda i, x=images.images: ("png", png_bytes(np.asarray(x[i]))), len(images),
                                     images.labels)
    height, width = source.image_size
    return EncodedSource(splits, source.classes, "L" if source.channels == 1 else "RGB", [height, width],
                         source.split_note)


def encoded_source(spec: str) -> EncodedSource:
    kind, _, argument = spec.partition(":")
    if kind == "folder":
        source = folder_source(Path(argument).expanduser())
    elif kind == "npz":
        source = npz_source(Path(argument).expanduser())
    elif kind == "shards":
        raise PretrainlabError("the source is already sharded; give a folder:, npz: or other dataset spec")
    else:
        from pretrainlab.data import load_source

        return decoded_source(load_source(spec))  # already split like every --data source
    train = source.splits["train"]
    if "test" not in source.splits and train.labels is not None:  # the split `--data SPEC` would make
        train_idx, test_idx = stratified_indices(train.labels, TEST_FRACTION, SPLIT_SEED)
        source.splits = {"train": subset(train, train_idx), "test": subset(train, test_idx)}
        source.split_note = f"stratified {int(TEST_FRACTION * 100)}% test split, seed {SPLIT_SEED}"
    return source


def subset(split: EncodedSplit, indices: np.ndarray) -> EncodedSplit:
    return EncodedSplit(lambda i: split.read(int(indices[i])), len(indices),
                        None if split.labels is None else split.labels[indices])


def tar_bytes(sample: dict) -> int:
    """Bytes a sample takes in a tar file: a 512-byte header per member, data padded to 512-byte blocks."""
    sizes = [len(value) if isinstance(value, bytes) else len(str(value)) for key, value in sample.items()
             if not key.startswith("__")]
    return sum(512 + -(-size // 512) * 512 for size in sizes)


def write_split(split: EncodedSplit, name: str, out: Path, shard_bytes: int,
                seed: int) -> tuple[list[dict], int, set[str], set]:
    """Writes one split in a seeded random order; returns (shard entries, skipped files, extensions, sizes).

    A shard is closed before the sample that would take it past `shard_bytes` (it holds at least one sample).
    `sizes` holds the (H, W) of the images while they share one or two sizes (more are not tracked).
    """
    import webdataset as wds

    entries: list[dict] = []
    extensions: set[str] = set()
    sizes: set = set()
    skipped, writer, used = 0, None, 0
    try:
        for index in np.random.default_rng([seed, 0 if name == "train" else 1]).permutation(split.count):
            member = split.read(int(index))
            if member is None:
                skipped += 1
                continue
            extension, data = member
            sample = {"__key__": f"{int(index):09d}", extension: data}
            if split.labels is not None:
                sample["cls"] = int(split.labels[index])
            extensions.add(extension)
            if len(sizes) < 2:
                sizes.add(header_size(data))
            if writer is None or (used + tar_bytes(sample) > shard_bytes and entries[-1]["count"]):
                if writer is not None:
                    writer.close()
                entries.append({"name": f"{name}-{len(entries):06d}.tar", "count": 0})
                writer, used = wds.TarWriter(str(out / entries[-1]["name"]), mtime=0), 0  # int mtime: no pax header
            writer.write(sample)
            entries[-1]["count"] += 1
            used += tar_bytes(sample)
    finally:
        if writer is not None:
            writer.close()
    for entry in entries:
        entry["bytes"] = (out / entry["name"]).stat().st_size
    return entries, skipped, extensions, sizes


def write_shards(spec: str, out: Path, shard_bytes: int, seed: int = 0) -> dict:
    """Writes `spec` as tar shards into the empty or new folder `out`; returns the index written there."""
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise PretrainlabError(f"--out {out} is not empty; shards go into a new or empty folder")
    source = encoded_source(spec)
    out.mkdir(parents=True, exist_ok=True)
    index: dict = {"format": INDEX_FORMAT, "source": spec, "seed": seed, "mode": source.mode,
                   "image_size": source.image_size, "classes": source.classes, "split": source.split_note,
                   "splits": {}, "skipped": 0}
    extensions: set[str] = set()
    sizes: set = set()
    for name, split in source.splits.items():
        entries, skipped, split_extensions, split_sizes = write_split(split, name, out, shard_bytes, seed)
        index["splits"][name] = entries
        index["skipped"] += skipped
        extensions |= split_extensions
        sizes |= split_sizes
        log.info("%s: %d images in %d shards", name, sum(e["count"] for e in entries), len(entries))
    labels = source.splits["train"].labels
    index["labelled"] = labels is not None
    index["num_classes"] = len(source.classes) if source.classes else (int(labels.max()) + 1 if labels is not None
                                                                         else 0)
    index["extensions"] = sorted(extensions)
    if index["image_size"] is None and len(sizes) == 1 and None not in sizes:
        index["image_size"] = list(next(iter(sizes)))  # every image has this (H, W)
    if not index["splits"]["train"]:
        raise PretrainlabError(f"none of the images of {spec} could be read; nothing was written")
    with atomic_path(out / INDEX_NAME) as tmp:
        tmp.write_text(json.dumps(index, indent=1))
    return index
