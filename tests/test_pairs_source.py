"""The `pairs:` data kind: npz and scene-folder layouts, and partners reaching the method with each batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretrainlab.backbones import create_backbone
from pretrainlab.data import load_source
from pretrainlab.data.loader import BatchPlan, batches
from pretrainlab.data.pairs import PARTNERS
from pretrainlab.errors import PretrainlabError
from pretrainlab.methods.base import Batch, Method, MethodContext
from pretrainlab.train.config import TrainConfig
from pretrainlab.train.loop import Trainer


def write_pair_npz(path: Path, count: int = 12, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    first = np.arange(count * size * size, dtype=np.int64).reshape(count, size, size) % 251
    second = 250 - first
    np.savez(path, x1=first.astype(np.uint8), x2=second.astype(np.uint8))
    return first.astype(np.uint8), second.astype(np.uint8)


def test_npz_pairs_keep_partners_aligned(tmp_path: Path) -> None:
    first, second = write_pair_npz(tmp_path / "pairs.npz")
    source = load_source(f"pairs:{tmp_path / 'pairs.npz'}")
    assert source.train.images.shape == (12, 8, 8, 1)
    np.testing.assert_array_equal(source.train.extras[PARTNERS][..., 0], second)
    subset = source.train.subset(np.array([3, 7]))
    np.testing.assert_array_equal(subset.extras[PARTNERS][..., 0], second[[3, 7]])
    np.testing.assert_array_equal(subset.images[..., 0], first[[3, 7]])


def test_npz_pairs_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", x1=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(PretrainlabError, match="x1 and x2"):
        load_source(f"pairs:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "shape.npz", x1=np.zeros((4, 8, 8), np.uint8), x2=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(PretrainlabError, match="one shape"):
        load_source(f"pairs:{tmp_path / 'shape.npz'}")
    with pytest.raises(PretrainlabError, match="not found"):
        load_source(f"pairs:{tmp_path / 'missing'}")


def test_scene_folder_pairs_consecutive_images(tmp_path: Path) -> None:
    values = {"a": [10, 20], "b": [30, 40, 50], "c": [60]}  # c has a single image: skipped
    for scene, levels in values.items():
        (tmp_path / scene).mkdir()
        for index, level in enumerate(levels):
            Image.fromarray(np.full((12, 12), level, np.uint8)).save(tmp_path / scene / f"{index}.png")
    source = load_source(f"pairs:{tmp_path}", image_size=8)
    firsts = source.train.images[:, 0, 0, 0].tolist()
    seconds = source.train.extras[PARTNERS][:, 0, 0, 0].tolist()
    assert list(zip(firsts, seconds, strict=True)) == [(10, 20), (30, 40), (40, 50)]
    assert source.train.images.shape == (3, 8, 8, 1)


def test_empty_scene_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "only" / "0.png")
    with pytest.raises(PretrainlabError, match="no image pairs"):
        load_source(f"pairs:{tmp_path}")


def test_loader_yields_partner_rows_of_the_same_images(tmp_path: Path) -> None:
    first, second = write_pair_npz(tmp_path / "pairs.npz")
    source = load_source(f"pairs:{tmp_path / 'pairs.npz'}")
    plan = BatchPlan(len(source.train), 4, seed=3)
    for _, images, _, extras in batches(source.train, plan, 0, 3, torch.device("cpu")):
        # x2 = 250 - x1 row by row, so alignment is checked pixel by pixel
        torch.testing.assert_close(extras[PARTNERS].int(), 250 - images.int())


class PartnerSpy(Method):
    """Records what reaches forward; its loss only exists so the loop can step."""

    config_class = dict

    def __init__(self, backbone, context: MethodContext) -> None:  # noqa: ANN001
        super().__init__(backbone, {}, context)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.seen.append((batch.images.clone(), batch.extra[PARTNERS].clone()))
        return {"loss": self.backbone.pooled(batch.views["global"][0].images).pow(2).mean()}


def test_trainer_hands_partners_to_the_method_in_batch_extra(tmp_path: Path) -> None:
    write_pair_npz(tmp_path / "pairs.npz", count=16)
    source = load_source(f"pairs:{tmp_path / 'pairs.npz'}")
    context = MethodContext(img_size=8, in_chans=1, mean=(0.5,), std=(0.25,))
    spy = PartnerSpy(create_backbone("tinycnn", 8, 1), context)
    config = TrainConfig(epochs=1, batch_size=8, accumulate=2, warmup_epochs=0, device="cpu")
    (tmp_path / "run").mkdir()
    Trainer(spy, source.train, config, tmp_path / "run", torch.device("cpu"), show_progress=False).fit()
    assert len(spy.seen) == 4  # 2 steps x 2 micro-batches
    for images, partners in spy.seen:
        assert partners.shape == (4, 8, 8, 1)
        torch.testing.assert_close((partners.float() / 255.0).permute(0, 3, 1, 2), (250.0 / 255.0) - images)
