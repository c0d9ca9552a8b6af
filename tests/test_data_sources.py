"""Dataset sources: builtin, npz (both layouts), folder (labelled, flat, corrupt files), and their errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrainlab.data import load_source
from pretrainlab.data.loader import BatchPlan
from pretrainlab.errors import PretrainlabError, UnknownNameError


def test_builtin_is_real_mnist_with_a_fixed_stratified_split(builtin_source) -> None:
    assert builtin_source.train.images.shape == (4000, 28, 28, 1)
    assert builtin_source.test.images.shape == (1000, 28, 28, 1)
    assert np.bincount(builtin_source.test.labels).tolist() == [100] * 10
    assert "seed 0" in builtin_source.split_note
    again = load_source("builtin")
    assert np.array_equal(again.test.images, builtin_source.test.images)
    assert builtin_source.train.images.mean() > 10  # real digits, not blank arrays


def test_npz_array_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "arrays.npz"
    np.savez(path, x_train=rng.integers(0, 255, (20, 12, 12), dtype=np.uint8), y_train=np.arange(20) % 2,
             x_test=rng.integers(0, 255, (6, 12, 12), dtype=np.uint8), y_test=np.arange(6) % 2)
    source = load_source(f"npz:{path}")
    assert source.train.images.shape == (20, 12, 12, 1) and source.test.labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_npz_jpeg_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    encoded, offsets = [], [0]
    for _ in range(10):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        offsets.append(offsets[-1] + len(encoded[-1]))
    path = tmp_path / "jpeg.npz"
    np.savez(path, jpeg_train=np.concatenate(encoded), offsets_train=np.array(offsets), y_train=np.arange(10) % 5,
             classes=np.array(["a", "b", "c", "d", "e"]))
    source = load_source(f"npz:{path}")
    assert len(source.train) == 5 and source.test.images.shape == (5, 16, 16, 3)  # a split was made
    assert source.classes == ["a", "b", "c", "d", "e"]


def test_npz_wrong_layout_names_expected_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(PretrainlabError, match="x_train"):
        load_source(f"npz:{path}")


def _write_images(folder: Path, count: int, mode: str = "RGB") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for index in range(count):
        shape = (20 + index, 30, 3) if mode == "RGB" else (20 + index, 30)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"{index}.png")


def test_folder_with_class_subfolders_counts_corrupt_files(tmp_path: Path) -> None:
    _write_images(tmp_path / "cats", 4)
    _write_images(tmp_path / "dogs", 5)
    (tmp_path / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    source = load_source(f"folder:{tmp_path}", image_size=16)
    assert source.classes == ["cats", "dogs"]
    assert len(source.train) + len(source.test) == 9 and source.skipped_files == 1
    assert source.train.images.shape[1:] == (16, 16, 3)


def test_flat_grayscale_folder_is_unlabeled(tmp_path: Path) -> None:
    _write_images(tmp_path, 3, mode="L")
    source = load_source(f"folder:{tmp_path}", image_size=8)
    assert not source.labelled and source.test is None and source.channels == 1


@pytest.mark.parametrize("spec, message", [
    ("folder:/does/not/exist", "not found"),
    ("npz:/does/not/exist.npz", "not found"),
    ("torchvision:CIFAR11", "CIFAR10"),
])
def test_bad_specs_give_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(PretrainlabError, match=message):
        load_source(spec)


def test_unknown_kind_suggests_closest() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'folder'"):
        load_source("foldr:/x")


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PretrainlabError, match="no images"):
        load_source(f"folder:{tmp_path}")


def test_batch_plan_is_a_deterministic_shardable_permutation() -> None:
    plan = BatchPlan(100, 20, seed=3)
    epoch = np.concatenate([plan.indices(step) for step in range(5)])
    assert sorted(epoch.tolist()) == list(range(100))
    shards = [BatchPlan(100, 20, seed=3, rank=r, world_size=2).indices(7) for r in range(2)]
    assert sorted(np.concatenate(shards).tolist()) == sorted(plan.indices(7).tolist())
    with pytest.raises(PretrainlabError, match="larger than the dataset"):
        BatchPlan(10, 20, seed=0)


def test_torchvision_set_without_download_says_how(tmp_path: Path) -> None:
    with pytest.raises(PretrainlabError, match="--download"):
        load_source(f"torchvision:MNIST:{tmp_path}")
