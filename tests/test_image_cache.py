"""Decoding into the pre-allocated cache in bounded chunks: the same pixels, unreadable files left out, wide boxes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pretrainlab.data import load_source
from pretrainlab.data.folder import decode_square
from pretrainlab.data.image_cache import write_image_cache
from pretrainlab.errors import PretrainlabError


def _folder(root: Path, count: int, size: tuple[int, int] = (20, 30)) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        path = root / f"c{i % 2}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        files.append(path)
    return files


def test_chunked_cache_holds_every_readable_image_in_order(tmp_path: Path) -> None:
    arrays = [np.full((4, 4, 3), i, dtype=np.uint8) for i in range(23)]
    unreadable = {3, 7, 8, 22}
    calls = []

    def decode_chunk(start: int, stop: int) -> list:
        calls.append((start, stop))
        return [None if i in unreadable else arrays[i] for i in range(start, stop)]

    readable = write_image_cache(tmp_path / "c.npy", 23, (4, 4, 3), decode_chunk, chunk=5)
    assert calls == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)], "bounded chunks, in order"
    images = np.load(tmp_path / "c.npy", mmap_mode="r")  # a valid .npy whose header states the rows written
    kept = [i for i in range(23) if i not in unreadable]
    assert images.shape == (19, 4, 4, 3) and readable.tolist() == [i not in unreadable for i in range(23)]
    np.testing.assert_array_equal(images[:, 0, 0, 0], kept)
    assert (tmp_path / "c.npy").stat().st_size == 128 + 19 * 48  # truncated after the last row


def test_rows_of_a_memory_mapped_cache_are_copied_in_chunks(tmp_path: Path) -> None:
    from pretrainlab.data.image_cache import take_rows

    full = np.random.default_rng(0).integers(0, 256, (50, 3, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "full.npy", full)
    mapped = np.load(tmp_path / "full.npy", mmap_mode="r")
    indices = np.array([49, 0, 7, 8, 9, 30, 2])
    taken = take_rows(mapped, indices, chunk=3)
    np.testing.assert_array_equal(taken, full[indices])
    np.testing.assert_array_equal(take_rows(full, indices), full[indices])  # in memory: plain indexing


def test_folder_decodes_to_the_cache_with_the_old_pixels_and_counts_bad_files(tmp_path: Path) -> None:
    files = _folder(tmp_path / "data", 12)
    (tmp_path / "data" / "c1" / "broken.png").write_bytes(b"\x89PNG not really")
    source = load_source(f"folder:{tmp_path / 'data'}", image_size=16)
    assert source.skipped_files == 1 and len(source.train) + len(source.test) == 12
    every = np.concatenate([source.train.images, source.test.images])
    expected = np.stack([decode_square(f, 16, "RGB") for f in files])  # the per-file decoder folder: always used
    assert sorted(map(bytes, every)) == sorted(map(bytes, expected))


def test_wide_decode_box_is_used_and_recorded(tmp_path: Path) -> None:
    from pretrainlab.pipeline import build_run_config, pretrain

    _folder(tmp_path / "data", 16, size=(24, 40))
    source = load_source(f"folder:{tmp_path / 'data'}", image_size=12, aspect=1.5)
    assert source.train.images.shape[1:] == (12, 18, 3)  # 24x40 covers 12x18: the sides are kept, not cropped
    config = build_run_config("simclr", {"backbone": "tinycnn", "data": f"folder:{tmp_path / 'data'}",
                                         "out": str(tmp_path / "run"), "img_size": 12, "decode_size": 14,
                                         "decode_aspect": 1.5},
                              {"epochs": 1, "batch_size": 4}, {"hidden_dim": 16, "projection_dim": 8})
    pretrain(config, show_progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["decode_size"] == 14 and saved["decode_aspect"] == 1.5
    assert saved["resolved"]["decoded_shape"] == [14, 21] and saved["resolved"]["img_size"] == 12


def test_decode_aspect_is_refused_for_array_sources() -> None:
    with pytest.raises(PretrainlabError, match="decode-aspect applies to folder: and shards:"):
        load_source("builtin", aspect=1.5)


def test_wide_decoding_keeps_the_centre_band(tmp_path: Path) -> None:
    from pretrainlab.data.decode import decode_image

    image = np.zeros((10, 40, 3), dtype=np.uint8)
    image[:, 15:25] = 255  # a white band in the middle quarter
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    wide = decode_image(buffer.getvalue(), 10, "RGB", aspect=2.0)
    square = decode_image(buffer.getvalue(), 10, "RGB")
    assert wide.shape == (10, 20, 3) and square.shape == (10, 10, 3)
    assert square.min() == 255  # the centre square sees only the band
    assert (wide[:, 5:15] == 255).all() and wide[:, :5].max() == 0 and wide[:, 15:].max() == 0  # and its sides
