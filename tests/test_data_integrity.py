"""Data is never corrupted silently: wide pixel types are scaled by their range, labels are validated, and image
folders read regular files only, with dangling symlinks, loops and decompression bombs as counted skips."""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrainlab.data import load_source
from pretrainlab.errors import PretrainlabError

SIZE = 8


def gray_png(path: Path, value: int = 100) -> Path:
    Image.fromarray(np.full((SIZE, SIZE), value, dtype=np.uint8)).save(path)
    return path


def decoded_value(folder: Path) -> dict[str, int]:
    """{file stem: mean decoded value} of a flat folder whose files sort by name."""
    source = load_source(f"folder:{folder}", image_size=SIZE)
    names = sorted(path.stem for path in folder.iterdir())
    return {name: round(float(image.mean())) for name, image in zip(names, source.train.images, strict=True)}


def test_sixteen_bit_png_is_scaled_by_its_range_not_clipped(tmp_path: Path) -> None:
    for name, value in (("a_dark", 4112), ("b_mid", 32896), ("c_full", 65535)):  # 16 * 257, 128 * 257, 255 * 257
        Image.fromarray(np.full((SIZE, SIZE), value, dtype=np.uint16)).save(tmp_path / f"{name}.png")
    assert Image.open(tmp_path / "b_mid.png").mode == "I;16"
    assert decoded_value(tmp_path) == {"a_dark": 16, "b_mid": 128, "c_full": 255}


def test_float_tiffs_are_scaled_from_unit_range_or_their_own_range(tmp_path: Path) -> None:
    Image.fromarray(np.full((SIZE, SIZE), 0.5, dtype=np.float32)).save(tmp_path / "a_half.tif")
    Image.fromarray(np.full((SIZE, SIZE), 1.0, dtype=np.float32)).save(tmp_path / "b_one.tif")
    ramp = np.tile(np.linspace(-50.0, 950.0, SIZE, dtype=np.float32), (SIZE, 1))  # outside [0, 1]: own range
    Image.fromarray(ramp).save(tmp_path / "c_ramp.tif")
    assert Image.open(tmp_path / "a_half.tif").mode == "F"
    values = decoded_value(tmp_path)
    assert values["a_half"] == 128 and values["b_one"] == 255
    assert values["c_ramp"] == 128  # the ramp's own min..max mapped to 0..255: its mean is mid-grey


def test_npz_uint16_images_are_scaled_and_out_of_range_floats_refused(tmp_path: Path) -> None:
    path = tmp_path / "wide.npz"
    np.savez(path, x_train=np.full((4, SIZE, SIZE), 32896, dtype=np.uint16))
    assert load_source(f"npz:{path}").train.images.max() == 128
    np.savez(path, x_train=np.full((4, SIZE, SIZE), -0.5, dtype=np.float32))
    with pytest.raises(PretrainlabError, match=r"spans -0.5..-0.5; images must be uint8"):
        load_source(f"npz:{path}")


@pytest.mark.parametrize("labels, problem", [
    ([0, 1, np.nan, 1], r"label 2 is nan \(NaN or infinite"),
    ([0, -3, 1, 1], r"label 1 is -3 \(negative"),
    ([0, 1, 1.5, 1], r"label 2 is 1.5 \(not a whole number"),
    ([0, 1, 10**10, 1], r"label 2 is 10000000000 \(absurdly large"),
    (["cat", "dog", "cat", "dog"], r"got <U3 values"),
])
def test_labels_are_validated_at_load(tmp_path: Path, labels: list, problem: str) -> None:
    path = tmp_path / "labelled.npz"
    np.savez(path, x_train=np.zeros((4, SIZE, SIZE), dtype=np.uint8), y_train=np.array(labels))
    with pytest.raises(PretrainlabError, match=r"labels must be class ids, whole numbers 0\.\.99999; " + problem):
        load_source(f"npz:{path}")


def test_labels_beyond_the_named_classes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "named.npz"
    np.savez(path, x_train=np.zeros((4, SIZE, SIZE), dtype=np.uint8), y_train=np.array([0, 1, 2, 0]),
             classes=np.array(["a", "b"]))
    with pytest.raises(PretrainlabError, match="names 2 classes but has label 2"):
        load_source(f"npz:{path}")


def test_dangling_symlinks_and_symlink_loops_are_counted_skips(tmp_path: Path) -> None:
    for index in range(3):
        gray_png(tmp_path / f"good{index}.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / "loop_a.png").symlink_to(tmp_path / "loop_b.png")
    (tmp_path / "loop_b.png").symlink_to(tmp_path / "loop_a.png")
    (tmp_path / "linked.png").symlink_to(tmp_path / "good0.png")  # a good symlink is read
    source = load_source(f"folder:{tmp_path}", image_size=SIZE)
    assert len(source.train) == 4 and source.skipped_files == 3


def decompression_bomb(path: Path, side: int = 40_000) -> Path:
    """A PNG whose header claims side x side pixels (over PIL's limit) with almost no data: a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_a_counted_skip(tmp_path: Path) -> None:
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(3):
            gray_png(tmp_path / label / f"{index}.png")
    decompression_bomb(tmp_path / "a" / "bomb.png")
    source = load_source(f"folder:{tmp_path}", image_size=SIZE)
    assert len(source.train) + len(source.test) == 6 and source.skipped_files == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_in_an_image_folder_is_skipped_never_opened(tmp_path: Path) -> None:
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(3):
            gray_png(tmp_path / label / f"{index}.png")
    fifo = tmp_path / "a" / "pipe.png"
    os.mkfifo(fifo)
    # Opening a FIFO for reading blocks until a writer comes, so a loader that opened it hung forever. Here a
    # writer serves every open (so this test cannot hang) and counts them: the loader must open it zero times.
    opened, stop = [], threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), open(fifo, "wb") as handle:  # blocks until a reader opens
                opened.append(True)
                handle.write(b"not an image")

    writer = threading.Thread(target=serve, daemon=True)
    writer.start()
    try:
        source = load_source(f"folder:{tmp_path}", image_size=SIZE)
    finally:
        stop.set()
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # releases the writer's last open
        writer.join(timeout=5)
    assert len(opened) == 1, "the loader opened the FIFO"  # the one open is the release above
    assert len(source.train) + len(source.test) == 6 and source.skipped_files == 1
