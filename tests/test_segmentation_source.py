"""Sources with masks and multi-labels: seg:PATH folders, composed canvases, 2-D npz labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrainlab.data import load_source
from pretrainlab.data.composed import OBJECT_THRESHOLD, compose_source, parse_argument, present_classes
from pretrainlab.data.source import ImageSet
from pretrainlab.errors import PretrainlabError


def write_pair(folder: Path, name: str, mask: np.ndarray, suffix: str = ".png", mask_mode: str = "L") -> None:
    """An RGB image whose red channel encodes the mask, and the mask PNG itself."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    image = np.stack([mask * 40, np.full_like(mask, 90), np.zeros_like(mask)], axis=-1).astype(np.uint8)
    Image.fromarray(image).save(folder / "images" / f"{name}{suffix}")
    mask_image = Image.fromarray(mask.astype(np.uint8), mode="L")
    if mask_mode == "P":
        mask_image = mask_image.convert("P")
    mask_image.save(folder / "masks" / f"{name}.png")


def halves_mask(height: int, width: int, left: int, right: int) -> np.ndarray:
    mask = np.full((height, width), right, dtype=np.uint8)
    mask[:, : width // 2] = left
    return mask


def test_seg_folder_loads_masks_resized_by_nearest_neighbour(tmp_path: Path) -> None:
    for index in range(10):
        mask = halves_mask(32, 48, index % 3, 255 if index == 0 else 3)  # wider than tall: centre-cropped
        write_pair(tmp_path, f"img{index:02d}", mask, mask_mode="P" if index == 1 else "L")
    (tmp_path / "classes.txt").write_text("sky\ntree\nroad\ncar\n")
    source = load_source(f"seg:{tmp_path}", image_size=16)
    assert source.mask_classes == ["sky", "tree", "road", "car"]
    assert source.has_masks and not source.labelled
    assert len(source.train) == 8 and len(source.test) == 2 and "random 20%" in source.split_note
    everything = np.concatenate([source.train.masks, source.test.masks])
    assert everything.shape == (10, 16, 16) and everything.dtype == np.uint8
    assert set(np.unique(everything)) <= {0, 1, 2, 3, 255}  # nearest neighbour invents no id
    # 48x32 -> 24x16, centre crop of 16 columns keeps columns 4..19 of 24: the boundary sits at column 8.
    for mask in everything:
        assert (mask[:, :8] == mask[0, 0]).all() and (mask[:, 8:] == mask[0, 15]).all()
    assert 255 in everything[:, :, 8:]  # the ignore id survives
    assert source.train.images.shape == (8, 16, 16, 3)


def test_seg_folder_with_given_splits(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("test", 2)):
        for index in range(count):
            write_pair(tmp_path / split, f"{split}{index}", halves_mask(8, 8, 1, 2), suffix=".jpg")
    source = load_source(f"seg:{tmp_path}", image_size=8)
    assert (len(source.train), len(source.test)) == (3, 2) and source.split_note == "given"
    assert source.mask_classes is None and set(np.unique(source.test.masks)) == {1, 2}


@pytest.mark.parametrize("problem", ["missing", "size", "rgb", "orphan", "class_id"])
def test_seg_folder_mismatches_are_one_line_errors(tmp_path: Path, problem: str) -> None:
    for index in range(3):
        write_pair(tmp_path, f"img{index}", halves_mask(8, 8, 0, 1))
    if problem == "missing":
        (tmp_path / "masks" / "img1.png").unlink()
        expected = "img1.png has no mask"
    elif problem == "size":
        Image.fromarray(np.zeros((8, 9), dtype=np.uint8)).save(tmp_path / "masks" / "img2.png")
        expected = "masks/img2.png is 9x8 but its image is 8x8"
    elif problem == "rgb":
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "masks" / "img0.png")
        expected = "masks/img0.png has mode RGB"
    elif problem == "orphan":
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "masks" / "extra.png")
        expected = "masks/extra.png has no image"
    else:
        (tmp_path / "classes.txt").write_text("background\n")
        expected = "class id 1 but classes.txt names only 1 classes"
    with pytest.raises(PretrainlabError, match=expected) as error:
        load_source(f"seg:{tmp_path}", image_size=8)
    assert "\n" not in str(error.value)


def test_image_set_routes_multi_hot_labels_and_keeps_single_labels() -> None:
    images = np.zeros((4, 8, 8), dtype=np.uint8)
    multi = ImageSet(images, np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]]))
    assert multi.labels is None and multi.multilabels.dtype == np.uint8 and multi.multilabels.shape == (4, 3)
    single = ImageSet(images, np.array([[3], [1], [0], [2]]))  # (N, 1) column labels stay single labels
    assert single.labels.tolist() == [3, 1, 0, 2] and single.multilabels is None
    masks = np.arange(4 * 64, dtype=np.int64).reshape(4, 8, 8).astype(np.uint8)
    both = ImageSet(images, masks=masks, multilabels=multi.multilabels).subset(np.array([2, 0]))
    assert both.masks.tolist() == masks[[2, 0]].tolist() and both.multilabels.tolist() == [[1, 1, 1], [1, 0, 1]]
    with pytest.raises(PretrainlabError, match="masks must be uint8"):
        ImageSet(images, masks=masks[:, :4])
    with pytest.raises(PretrainlabError, match="0/1 array"):
        ImageSet(images, multilabels=np.full((4, 2), 2))


def test_npz_with_multi_hot_labels_gets_a_random_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "multi.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
             y_train=rng.integers(0, 2, (20, 5)))
    source = load_source(f"npz:{path}")
    assert source.has_multilabels and not source.labelled
    assert (len(source.train), len(source.test)) == (16, 4) and source.split_note.startswith("random")


def test_composed_canvases_from_the_digits(builtin_source) -> None:
    source = compose_source(builtin_source, 40)
    again = compose_source(builtin_source, 40)
    assert source.spec == "composed:builtin:40" and (len(source.train), len(source.test)) == (40, 10)
    assert source.train.images.shape == (40, 56, 56, 1) and source.train.masks.shape == (40, 56, 56)
    assert np.array_equal(source.train.images, again.train.images)  # fixed seed: the same task every time
    assert np.array_equal(source.test.masks, again.test.masks)
    assert source.mask_classes == ["background", *builtin_source.classes]
    masks, images = source.train.masks, source.train.images[..., 0]
    assert set(np.unique(masks)) <= set(range(11))
    assert (images[masks > 0] > OBJECT_THRESHOLD).all()  # labelled pixels are bright object pixels
    assert (masks > 0).mean() > 0.05 and (masks == 0).mean() > 0.5
    objects_per_canvas = [len(np.unique(mask)) - 1 for mask in masks]
    assert min(objects_per_canvas) >= 1 and max(objects_per_canvas) <= 4
    assert np.array_equal(source.train.multilabels, present_classes(masks, 10))
    assert source.train.multilabels.sum(axis=1).tolist() == objects_per_canvas


def test_composed_spec_parsing_and_errors(tmp_path: Path) -> None:
    assert parse_argument("builtin") == ("builtin", 2000)
    assert parse_argument("npz:/data/f.npz:500") == ("npz:/data/f.npz", 500)
    assert parse_argument("npz:/data/f.npz") == ("npz:/data/f.npz", 2000)
    with pytest.raises(PretrainlabError, match="at least 4"):
        parse_argument("builtin:2")
    unlabeled = tmp_path / "unlabeled.npz"
    np.savez(unlabeled, x_train=np.zeros((6, 8, 8), dtype=np.uint8))
    with pytest.raises(PretrainlabError, match="needs labels"):
        load_source(f"composed:npz:{unlabeled}:8")
    labelled = tmp_path / "labelled.npz"
    np.savez(labelled, x_train=np.full((10, 8, 8), 200, dtype=np.uint8), y_train=np.arange(10) % 2)
    source = load_source(f"composed:npz:{labelled}:8")
    assert source.train.images.shape == (8, 16, 16, 1) and len(source.test) == 2
