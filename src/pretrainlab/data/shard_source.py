"""`shards:` as a data source: streamed for pre-training (`open_stream`), decoded to the cache for evaluation.

Pre-training reads the training shards through loader workers and never holds the dataset (data/stream.py);
what the pipeline needs besides the batches (channel statistics, image size, class count, a few images for
the reconstruction grid) comes from the index and the first decoded images. Evaluation protocols need
random access, so `load_shards` (the `--data shards:...` loader of `eval` and `gauntlet`) decodes the splits
into the memory-mapped image cache in bounded chunks.
"""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pretrainlab.data.cache import cache_key, cached_array
from pretrainlab.data.decode import (
    DECODE_VERSION,
    GRAY_MODES,
    box_shape,
    decode_image,
    header_size,
    image_mode,
)
from pretrainlab.data.image_cache import cached_images
from pretrainlab.data.shards import (
    ERROR_KEY,
    ShardSplit,
    describe_split,
    image_member,
    locate_splits,
    read_samples,
    sample_label,
)
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

DEFAULT_STREAM_SIZE = 64
PREVIEW_IMAGES = 512


@dataclass
class StreamSource:
    """A shard set opened for streaming: what `ImageSource` offers the pipeline, with `train` a `ShardSplit`."""

    spec: str
    train: ShardSplit
    test: ImageSet | None
    classes: list[str] | None
    preview: ImageSet  # the first decoded training images: channel statistics, reconstruction grids
    num_classes: int = 0
    split_note: str = "given"

    @property
    def channels(self) -> int:
        return 1 if self.train.mode == "L" else 3

    @property
    def image_size(self) -> tuple[int, int]:
        return box_shape(self.train.size, self.train.aspect)

    @property
    def labelled(self) -> bool:
        return self.train.labelled

    def channel_stats(self) -> tuple[list[float], list[float]]:
        sample = self.preview.images.astype(np.float32) / 255.0  # (n, H, W, C)
        mean, std = sample.mean(axis=(0, 1, 2)), sample.std(axis=(0, 1, 2)).clip(min=1e-3)
        return [float(m) for m in mean], [float(s) for s in std]

    def require_labels(self, purpose: str) -> None:
        if not self.labelled:
            raise PretrainlabError(f"{purpose} needs labels, but the shards of '{self.spec}' carry none (no .cls "
                                   "member in every sample); write them from a labelled source")


def first_samples(split: ShardSplit, count: int) -> list[dict]:
    samples = (sample for shard in split.shards for sample in read_samples(shard.path))
    return list(itertools.islice((s for s in samples if ERROR_KEY not in s and image_member(s)), count))


def shard_split(paths: list[Path], index: dict | None, name: str, image_size: int | None,
                aspect: float) -> ShardSplit:
    """The split with counts, colour mode and decode box; the size defaults to the images' own when uniform."""
    shards, labelled, num_classes, extensions = describe_split(paths, index, name)
    split = ShardSplit(shards, labelled, "RGB", image_size or DEFAULT_STREAM_SIZE, aspect, extensions, num_classes)
    if index is not None:
        split.mode = index["mode"]
        stored = index.get("image_size")
        if image_size is None and stored and stored[0] == stored[1]:
            split.size = int(stored[0])
        return split
    probe = first_samples(split, 64)
    modes = {image_mode(image_member(s)[1]) for s in probe}
    split.mode = "L" if modes and modes <= GRAY_MODES else "RGB"
    sizes = {header_size(image_member(s)[1]) for s in probe}  # (H, W); only a square one is used
    if image_size is None and len(sizes) == 1 and None not in sizes and next(iter(sizes))[0] == next(iter(sizes))[1]:
        split.size = next(iter(sizes))[0]
    return split


def open_stream(argument: str, image_size: int | None = None, aspect: float = 1.0) -> StreamSource:
    """Opens `shards:ARGUMENT` for streaming: counts, decode box, a decoded test split and a preview."""
    train_paths, test_paths, index = locate_splits(argument)
    train = shard_split(train_paths, index, "train", image_size, aspect)
    if len(train) == 0:
        raise PretrainlabError(f"shards:{argument} holds no samples")
    preview_samples = first_samples(train, PREVIEW_IMAGES)
    decoded = [decode_image(image_member(s)[1], train.size, train.mode, aspect) for s in preview_samples]
    decoded = [image for image in decoded if image is not None]
    if not decoded:
        raise PretrainlabError(f"none of the first {len(preview_samples)} images of shards:{argument} decodes")
    test = decoded_test_split(test_paths, index, train, aspect)
    classes = index.get("classes") if index else None
    num_classes = len(classes) if classes else (train.num_classes if train.labelled else 0)
    note = index.get("split", "given") if index else "given"
    return StreamSource(f"shards:{argument}", train, test, classes, ImageSet(np.stack(decoded)), num_classes, note)


def decoded_test_split(test_paths: list, index: dict | None, train: ShardSplit, aspect: float) -> ImageSet | None:
    """The test shards decoded into the image cache at the training split's size and mode (None without them)."""
    if not test_paths:
        return None
    test_split = shard_split(test_paths, index, "test", train.size, aspect)
    test_split.mode = train.mode
    return decoded_split(test_split, "test")


def decoded_split(split: ShardSplit, name: str) -> ImageSet:
    """Decodes a whole split into the image cache, chunk by chunk, in file order."""
    height, width = box_shape(split.size, split.aspect)
    channels = 1 if split.mode == "L" else 3
    stamps = [f"{shard.path}:{Path(shard.path).stat().st_mtime_ns}" for shard in split.shards]
    key = cache_key("shards", split.fingerprint(), *stamps, split.size, split.aspect, split.mode, DECODE_VERSION)
    labels = np.full(len(split), -1, dtype=np.int64)
    samples = (sample for shard in split.shards for sample in read_samples(shard.path))
    pool = ThreadPoolExecutor()
    taken = {"count": 0}

    def decode_one(sample: dict) -> np.ndarray | None:
        member = None if ERROR_KEY in sample else image_member(sample)
        return None if member is None else decode_image(member[1], split.size, split.mode, split.aspect)

    def decode_chunk(start: int, stop: int) -> list[np.ndarray | None]:
        chunk = list(itertools.islice(samples, stop - start))
        for offset, sample in enumerate(chunk):
            label = sample_label(sample)
            labels[start + offset] = -1 if label is None else label
        taken["count"] += len(chunk)
        return list(pool.map(decode_one, chunk))

    images, readable = cached_images(key, len(split), (height, width, channels), decode_chunk, what=f"{name} images")
    if split.labelled:
        def read_labels() -> np.ndarray:
            if taken["count"]:
                return labels
            found = [None if ERROR_KEY in s else sample_label(s) for shard in split.shards
                     for s in read_samples(shard.path)]  # a cache hit: only the labels, read again
            labels[: len(found)] = [-1 if label is None else label for label in found]
            return labels

        labels = cached_array(key + "-labels", read_labels)
    pool.shutdown()
    skipped = int((~readable).sum())
    if skipped:
        log.warning("skipped %d unreadable members of the %s shards", skipped, name)
    kept = labels[readable] if split.labelled else None
    if kept is not None and (kept < 0).any():
        raise PretrainlabError(f"{int((kept < 0).sum())} {name} samples carry no valid .cls label")
    return ImageSet(images, kept)


def load_shards(argument: str, image_size: int | None = None, aspect: float = 1.0, **_: object) -> ImageSource:
    """`--data shards:...` for evaluation: the train (and test) shards decoded into the image cache."""
    train_paths, test_paths, index = locate_splits(argument)
    train = shard_split(train_paths, index, "train", image_size, aspect)
    if len(train) == 0:
        raise PretrainlabError(f"shards:{argument} holds no samples")
    test = decoded_test_split(test_paths, index, train, aspect)
    classes = index.get("classes") if index else None
    note = index.get("split", "given") if index else "given"
    return ImageSource(f"shards:{argument}", decoded_split(train, "train"), test, classes=classes, split_note=note)
