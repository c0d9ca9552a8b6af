"""The shard stream inside loader workers: which shards a worker reads, the shuffle buffer, decoding, batching.

Every loader worker of every rank plays one *role* (rank * workers + worker). In stream epoch e the shard
order is a permutation drawn from (seed, e), and role r reads shards r, r + R, r + 2R, ... of it (R roles
in all), passes the raw samples through a seeded shuffle buffer, decodes and resizes them, and hands over
batches of uint8 images. A role's stream never ends: after its shards of epoch e come its shards of
epoch e + 1. The DataLoader takes one batch from each worker in turn, so training step s of a rank gets
the batch of its role s mod W.

A role's position is (stream epoch, raw samples taken from its shuffle buffer in that epoch). The buffer
shuffles raw bytes and decoding comes after it, so a resumed role replays its epoch up to that position
without decoding anything and continues exactly where it stopped. Members that fail to decode (or a
shard that breaks off) are skipped, counted, and still advance the position, so replays stay exact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pretrainlab.data.decode import decode_image
from pretrainlab.data.shards import ERROR_KEY, Shard, image_member, read_samples, sample_label

log = logging.getLogger(__name__)

JPEG_EXTENSIONS = ("jpg", "jpeg")
WARN_FIRST_SKIPS = 5


@dataclass(frozen=True)
class StreamPlan:
    """Everything a worker needs to produce its batches (picklable, shared by all workers of a rank).

    Args:
        local_batch: images per batch of this rank (the global batch / world size).
        workers: loader worker processes of each rank (0: decode in the training process, one role).
        raw_jpeg: hand JPEG members over undecoded, for decoding on the GPU.
    """

    shards: tuple[Shard, ...]
    mode: str
    size: int
    aspect: float
    labelled: bool
    local_batch: int
    seed: int
    rank: int
    world_size: int
    workers: int
    shuffle_buffer: int
    raw_jpeg: bool = False

    @property
    def roles_per_rank(self) -> int:
        return max(1, self.workers)

    @property
    def roles(self) -> int:
        return self.world_size * self.roles_per_rank

    def shards_of(self, role: int, epoch: int) -> list[Shard]:
        """The shards global role `role` reads in stream epoch `epoch`, in reading order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in order[role :: self.roles]]


def shuffled(samples: Iterator[dict], capacity: int, rng: np.random.Generator) -> Iterator[dict]:
    """A shuffle buffer of `capacity` samples: each new sample replaces a random buffered one, which is yielded."""
    if capacity <= 1:
        yield from samples
        return
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < capacity:
            buffer.append(sample)
            continue
        slot = int(rng.integers(capacity))
        yield buffer[slot]
        buffer[slot] = sample
    order = rng.permutation(len(buffer))
    yield from (buffer[i] for i in order)


def epoch_samples(plan: StreamPlan, role: int, epoch: int) -> Iterator[dict]:
    """The raw samples of one role in one stream epoch, after the shuffle buffer."""
    shards = plan.shards_of(role, epoch)
    raw = (sample for shard in shards for sample in read_samples(shard.path))
    return shuffled(raw, plan.shuffle_buffer, np.random.default_rng([plan.seed, epoch, role, 1]))


def decode_sample(sample: dict, plan: StreamPlan) -> tuple[np.ndarray, int] | None:
    """(image payload, label or -1): a decoded (H, W, C) image, or with `raw_jpeg` the JPEG bytes (n,) uint8."""
    member = None if ERROR_KEY in sample else image_member(sample)
    label = sample_label(sample) if plan.labelled else -1
    if member is None or label is None:
        return None
    extension, data = member
    if plan.raw_jpeg and extension in JPEG_EXTENSIONS:
        return np.frombuffer(data, dtype=np.uint8).copy(), label
    image = decode_image(data, plan.size, plan.mode, plan.aspect)
    return (image, label) if image is not None else None


def role_batches(plan: StreamPlan, local_role: int, position: tuple[int, int]) -> Iterator[dict]:
    """Batches of one role from `position` on, forever: {"images" | "payloads", "labels", "role", "position", ...}."""
    role = plan.rank * plan.roles_per_rank + local_role
    epoch, resume_offset = position
    payloads: list[np.ndarray] = []
    labels: list[int] = []
    skipped = 0
    while True:
        offset = decoded = 0
        for sample in epoch_samples(plan, role, epoch):
            offset += 1
            if offset <= resume_offset:
                continue  # replaying up to the saved position: no decoding
            result = decode_sample(sample, plan)
            if result is None:
                skipped += 1
                if skipped <= WARN_FIRST_SKIPS:
                    log.warning("skipped unreadable shard member %s (%s)", sample.get("__key__"),
                                sample.get(ERROR_KEY, "no decodable image" + (" or .cls" if plan.labelled else "")))
                continue
            decoded += 1
            payloads.append(result[0])
            labels.append(result[1])
            if len(payloads) == plan.local_batch:
                yield {"payloads": payloads, "labels": np.asarray(labels, dtype=np.int64) if plan.labelled else None,
                       "role": local_role, "position": (epoch, offset), "skipped": skipped}
                payloads, labels, skipped = [], [], 0
        if decoded == 0 and resume_offset == 0:
            yield {"error": f"stream epoch {epoch} of loader role {role} holds no readable sample "
                            f"({offset} members tried in {len(plan.shards_of(role, epoch))} shards)"}
            return
        epoch, resume_offset = epoch + 1, 0


class ShardStream(torch.utils.data.IterableDataset):
    """The DataLoader's dataset: worker slot i plays local role (i + rotation) mod W from its saved position.

    `rotation` is the resumed step mod W: the DataLoader always starts with worker slot 0, and the rotation
    makes that slot the role whose batch the resumed step needs.
    """

    def __init__(self, plan: StreamPlan, positions: list[tuple[int, int]], rotation: int) -> None:
        super().__init__()
        self.plan = plan
        self.positions = positions
        self.rotation = rotation

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        slot = 0 if info is None else info.id
        local_role = (slot + self.rotation) % self.plan.roles_per_rank
        for batch in role_batches(self.plan, local_role, self.positions[local_role]):
            if "payloads" in batch and not self.plan.raw_jpeg:
                batch["images"] = np.stack(batch.pop("payloads"))  # (b, H, W, C) uint8
            yield batch
