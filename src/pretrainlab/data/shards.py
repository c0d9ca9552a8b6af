"""`shards:DIR` and `shards:DIR/train-{000000..000099}.tar`: WebDataset tar shards, located, counted and read.

A shard set written by `pretrainlab shard` holds `train-NNNNNN.tar` (and `test-NNNNNN.tar` when the source
had a test split) and an `index.json` with every shard's sample count, the class names and the colour
mode. Shards from elsewhere work too: without an index, each shard's tar headers are scanned once to
count its samples. A sample is the members sharing one key: one image (`.jpg`, `.png`, ...) and, in a
labelled set, `.cls` (the class index as text).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
INDEX_FORMAT = "pretrainlab-shards-1"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm")
ERROR_KEY = "__error__"


@dataclass(frozen=True)
class Shard:
    path: str
    count: int


@dataclass
class ShardSplit:
    """One split of a shard set: its shards in name order, and how its images decode.

    Args:
        size: rows of the decoded box; aspect: its width / height (1.0: square).
        mode: "RGB" or "L". labelled: every sample carries `.cls`. num_classes: from the index, else largest + 1.
    """

    shards: list[Shard]
    labelled: bool
    mode: str
    size: int
    aspect: float = 1.0
    extensions: list[str] = field(default_factory=list)
    num_classes: int = 0

    def __len__(self) -> int:
        return sum(shard.count for shard in self.shards)

    def fingerprint(self) -> str:
        """Names and counts of the shards: a resumed stream must read the same set."""
        text = "|".join(f"{Path(shard.path).name}:{shard.count}" for shard in self.shards)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_member(name: str) -> tuple[str, str]:
    """'dir/key.ext' -> ('dir/key', 'ext'): WebDataset's rule (the extension starts at the base name's first dot)."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


class DamagedShard(Exception):
    """A tar header or member that is cut short or fails its checksum."""


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes over 8 GB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def tar_members(path: str) -> Iterator[tuple[str, bytes]]:
    """(name, data) of every regular file in a tar, in order: a plain reader of ustar/GNU/pax headers.

    Python's tarfile spends ~60 us per member on header objects; this takes a few, and that is the
    shard loader's hot path (two members per image).
    """
    with open(path, "rb", buffering=1 << 20) as handle:
        long_name: bytes | None = None
        while True:
            header = handle.read(512)
            if not header.strip(b"\0"):
                return  # end-of-archive blocks (or a clean end of file)
            if len(header) < 512:
                raise DamagedShard("cut off inside a header")
            stored = _octal(header[148:156])
            if stored != sum(header[:148]) + 256 + sum(header[156:]):
                raise DamagedShard("header checksum mismatch")
            size, kind = _octal(header[124:136]), header[156:157]
            data = handle.read(size)
            if len(data) < size:
                raise DamagedShard("cut off inside a member")
            handle.read(-size % 512)
            if kind == b"x":  # pax extended header: "LEN path=NAME\n" records
                long_name = next((r.split(b"=", 1)[1] for r in data.split(b"\n") if b" path=" in r), None)
                continue
            if kind == b"L":  # GNU long name
                long_name = data.rstrip(b"\0")
                continue
            name = header[:100].split(b"\0", 1)[0]
            if header[257:262] == b"ustar" and header[345:500].strip(b"\0"):
                name = header[345:500].split(b"\0", 1)[0] + b"/" + name
            name, long_name = long_name or name, None
            if kind in (b"0", b"\0", b"7"):
                yield name.decode("utf-8", "replace"), data


def read_samples(path: str) -> Iterator[dict[str, bytes | str]]:
    """The samples of one tar shard in file order: {"__key__": key, ext: bytes, ...}.

    A shard that breaks off (truncated, not a tar) yields one {ERROR_KEY: message} and stops: the caller counts
    it as a skipped member, and the same shard always breaks at the same place, so positions stay reproducible.
    """
    current: dict[str, bytes | str] | None = None
    try:
        for name, data in tar_members(path):
            key, extension = split_member(name)
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key}
            current[extension] = data
    except (DamagedShard, OSError, ValueError) as error:
        log.warning("shard %s is damaged after %s: %s", path, current["__key__"] if current else "its start", error)
        current = None
        yield {"__key__": f"{Path(path).name}:damaged", ERROR_KEY: str(error)}
    if current is not None:
        yield current


def image_member(sample: dict) -> tuple[str, bytes] | None:
    """(extension, encoded bytes) of the sample's image member, None when it has none."""
    for extension in IMAGE_EXTENSIONS:
        if extension in sample:
            return extension, sample[extension]
    return None


def sample_label(sample: dict) -> int | None:
    """The `.cls` member as an int, None when absent or not an integer."""
    text = sample.get("cls")
    try:
        return int(text.decode().strip()) if isinstance(text, bytes) else None
    except (UnicodeDecodeError, ValueError):
        return None


def scan_shard(path: str) -> tuple[int, bool, int, set[str]]:
    """(samples, all labelled, largest label, image extensions) of a shard without an index, from its tar headers."""
    count, labelled, largest, extensions = 0, True, -1, set()
    for sample in read_samples(path):
        if ERROR_KEY in sample:
            continue
        count += 1
        label = sample_label(sample)
        labelled = labelled and label is not None
        largest = max(largest, label if label is not None else -1)
        member = image_member(sample)
        if member is not None:
            extensions.add(member[0])
    return count, labelled, largest, extensions


def read_index(folder: Path) -> dict | None:
    path = folder / INDEX_NAME
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PretrainlabError(f"cannot read {path}: {error}") from None
    if index.get("format") != INDEX_FORMAT:
        raise PretrainlabError(f"{path} is not a pretrainlab shard index (format {index.get('format')!r})")
    return index


def expand_pattern(argument: str) -> list[Path]:
    """The tar files a `shards:` argument names: a folder's train shards, one file, or a brace pattern."""
    from braceexpand import braceexpand

    path = Path(argument).expanduser()
    if path.is_dir():
        index = read_index(path)
        if index is not None:
            return [path / entry["name"] for entry in index["splits"]["train"]]
        tars = sorted(path.glob("train-*.tar")) or sorted(path.glob("*.tar"))
        if not tars:
            raise PretrainlabError(f"shard folder {path} holds no .tar files (write some with `pretrainlab shard`)")
        return tars
    names = list(braceexpand(str(path))) if "{" in argument else [str(path)]
    existing = [Path(name) for name in names if Path(name).is_file()]
    if not existing:
        raise PretrainlabError(f"shards:{argument} matches no file ({len(names)} names tried, e.g. {names[0]}); "
                               "use shards:DIR or a brace pattern such as shards:DIR/train-{000000..000009}.tar")
    if len(existing) < len(names):
        missing = [name for name in names if not Path(name).is_file()]
        raise PretrainlabError(f"shards:{argument}: {len(missing)} of {len(names)} named files do not exist "
                               f"(first: {missing[0]})")
    return existing


def locate_splits(argument: str) -> tuple[list[Path], list[Path], dict | None]:
    """(train shard paths, test shard paths, index or None)."""
    train = expand_pattern(argument)
    folder = train[0].parent
    index = read_index(folder)
    test: list[Path] = []
    if index is not None and Path(argument).expanduser().is_dir():
        test = [folder / entry["name"] for entry in index["splits"].get("test", [])]
    elif Path(argument).expanduser().is_dir():
        test = sorted(folder.glob("test-*.tar")) if train[0].name.startswith("train-") else []
    return train, test, index


def describe_split(paths: list[Path], index: dict | None, split: str) -> tuple[list[Shard], bool, int, list[str]]:
    """(shards with counts, labelled, number of classes, image extensions), from the index or a header scan."""
    known = {entry["name"]: entry for entry in (index or {}).get("splits", {}).get(split, [])}
    if index is not None and all(path.name in known for path in paths):
        shards = [Shard(str(path), int(known[path.name]["count"])) for path in paths]
        return shards, bool(index["labelled"]), int(index.get("num_classes", 0)), list(index.get("extensions", []))
    shards, labelled, largest, extensions = [], True, -1, set()
    for path in paths:
        count, shard_labelled, shard_largest, shard_extensions = scan_shard(str(path))
        shards.append(Shard(str(path), count))
        labelled, largest = labelled and shard_labelled, max(largest, shard_largest)
        extensions |= shard_extensions
    return shards, labelled and largest >= 0, largest + 1, sorted(extensions)
