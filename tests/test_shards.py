"""Tar shards: written by `pretrainlab shard`, streamed by loader workers, resumed exactly, bad input refused."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrainlab.cli import main
from pretrainlab.data.shard_feed import ShardFeed
from pretrainlab.data.shard_source import load_shards, open_stream
from pretrainlab.data.shard_writer import parse_size, write_shards
from pretrainlab.data.stream import role_batches
from pretrainlab.errors import PretrainlabError


def _npz(path: Path, count: int = 96, size: int = 12) -> np.ndarray:
    """Random RGB images whose label is their own index (so a label names the image)."""
    images = np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    np.savez(path, x_train=images, y_train=np.arange(count), x_test=images[:8], y_test=np.arange(8))
    return images


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("shards")
    images = _npz(root / "data.npz")
    write_shards(f"npz:{root / 'data.npz'}", root / "shards", shard_bytes=parse_size("20KB"))
    return root / "shards", images


def test_written_shards_hold_every_image_once_losslessly(shard_dir: tuple[Path, np.ndarray]) -> None:
    folder, images = shard_dir
    index = json.loads((folder / "index.json").read_text())
    assert len(index["splits"]["train"]) >= 4 and index["image_size"] == [12, 12] and index["labelled"]
    assert sum(e["count"] for e in index["splits"]["train"]) == 96
    decoded = load_shards(str(folder))  # the evaluation path: decoded into the image cache
    order = np.argsort(decoded.train.labels)
    np.testing.assert_array_equal(decoded.train.labels[order], np.arange(96))
    np.testing.assert_array_equal(decoded.train.images[order], images)  # PNG: lossless
    assert decoded.test is not None and len(decoded.test) == 8


def test_stream_epoch_covers_every_sample_once_across_roles(shard_dir: tuple[Path, np.ndarray]) -> None:
    """2 ranks x 2 workers: in stream epoch 0 the four roles read disjoint shards that cover the set."""
    folder, _ = shard_dir
    split = open_stream(str(folder)).train
    seen = []
    for rank in range(2):
        feed = ShardFeed(split, 8, seed=3, rank=rank, world_size=2, workers=2, shuffle_buffer=16)
        for local_role in range(2):
            for batch in role_batches(feed.plan, local_role, (0, 0)):
                if batch["position"][0] > 0:
                    break
                seen.extend(batch["labels"].tolist())
    # Partial batches at the end of a role's epoch carry over into its next epoch, so up to 3 images per role wait.
    assert len(seen) == len(set(seen)) and len(seen) >= 96 - 4 * 3


def _stream(split, workers: int, steps: range, state: dict | None = None) -> tuple[list[np.ndarray], dict]:
    feed = ShardFeed(split, 8, seed=1, rank=0, world_size=1, workers=workers, shuffle_buffer=10)
    if state is not None:
        feed.load_state_dict(state)
    labels = []
    for step, images, batch_labels, _ in feed.batches(steps.start, steps.stop, torch.device("cpu")):
        assert images.shape == (8, 12, 12, 3) and images.dtype == torch.uint8
        labels.append(batch_labels.numpy())
        if step == steps.start + 2:
            saved = feed.state_dict()
    return labels, saved


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_stream_continues_exactly(shard_dir: tuple[Path, np.ndarray], workers: int) -> None:
    split = open_stream(str(folder := shard_dir[0])).train
    assert folder.exists()
    straight, _ = _stream(split, workers, range(0, 20))  # 20 steps of 8: past the end of the first epoch
    first, state = _stream(split, workers, range(0, 5))
    resumed, _ = _stream(split, workers, range(3, 20), state)  # the state saved after step 2
    for expected, got in zip(straight[3:], resumed, strict=True):
        np.testing.assert_array_equal(expected, got)
    np.testing.assert_array_equal(np.concatenate(straight[:5]), np.concatenate(first))
    seeds = [np.concatenate(_stream(split, workers, range(0, 4))[0]) for _ in range(2)]
    np.testing.assert_array_equal(*seeds)  # the order is a function of the seed alone


def _append_member(tar_path: Path, name: str, data: bytes) -> None:
    with tarfile.open(tar_path, "a") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def test_corrupt_member_is_skipped_and_counted(tmp_path: Path) -> None:
    _npz(tmp_path / "data.npz", count=32)
    write_shards(f"npz:{tmp_path / 'data.npz'}", tmp_path / "shards", shard_bytes=parse_size("1MB"))
    tar_path = tmp_path / "shards" / "train-000000.tar"
    _append_member(tar_path, "zzzzzzzzz.png", b"not a png at all")
    _append_member(tar_path, "zzzzzzzzz.cls", b"3")
    split = open_stream(str(tmp_path / "shards")).train
    feed = ShardFeed(split, 8, seed=0, rank=0, world_size=1, workers=0, shuffle_buffer=0)
    labels = [batch[2] for batch in feed.batches(0, 5, torch.device("cpu"))]  # 40 images: 33 members + wrap
    assert feed.skipped == 1 and all(len(batch) == 8 for batch in labels)


def test_shard_command_and_streamed_pretraining_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`pretrainlab shard`, then `pretrain --data shards:` stopped and resumed ends with the weights of one run."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from pretrainlab.pipeline import pretrain, saved_run_config

    _npz(tmp_path / "data.npz", count=64, size=16)
    assert main(["shard", f"npz:{tmp_path / 'data.npz'}", "--out", str(tmp_path / "shards"),
                 "--shard-size", "8KB"]) == 0
    assert "train: 64 images" in capsys.readouterr().out
    common = ["pretrain", "--method", "simclr", "--backbone", "tinycnn", "--data", f"shards:{tmp_path / 'shards'}",
              "--epochs", "2", "--batch-size", "16", "--no-progress", "--option", "hidden_dim=16",
              "--option", "projection_dim=8", "--workers", "2", "--shuffle-buffer", "8", "--checkpoint-every", "1"]
    assert main([*common, "--out", str(tmp_path / "straight")]) == 0
    assert main([*common, "--out", str(tmp_path / "resumed"), "--stop-after", "3"]) == 130
    saved = saved_run_config(tmp_path / "resumed")  # --resume keeps stop_after; lift it as test_training does
    pretrain(replace(saved, train=replace(saved.train, stop_after=0)), resume=True, show_progress=False)
    straight = load_file(str(tmp_path / "straight" / "backbone.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "backbone.safetensors"))
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0)


def test_bad_shard_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _npz(tmp_path / "data.npz", count=16)
    np.savez(tmp_path / "unlabelled.npz", x_train=np.zeros((16, 8, 8), dtype=np.uint8))
    write_shards(f"npz:{tmp_path / 'unlabelled.npz'}", tmp_path / "plain", shard_bytes=10**6)
    (tmp_path / "empty").mkdir()
    base = ["pretrain", "--backbone", "tinycnn", "--epochs", "1", "--batch-size", "4", "--no-progress"]
    cases = {
        "holds no .tar": [*base, "--method", "simclr", "--data", f"shards:{tmp_path / 'empty'}"],
        "matches no file": [*base, "--method", "simclr", "--data", f"shards:{tmp_path}/train-{{000..009}}.tar"],
        "carry none": [*base, "--method", "supervised", "--data", f"shards:{tmp_path / 'plain'}"],
        "not empty": ["shard", f"npz:{tmp_path / 'data.npz'}", "--out", str(tmp_path / "plain")],
        "is not a size": ["shard", f"npz:{tmp_path / 'data.npz'}", "--out", str(tmp_path / "x"), "--shard-size", "1XB"],
    }
    for expected, argv in cases.items():
        assert main([*argv, "--out", str(tmp_path / "run")] if argv[0] == "pretrain" else argv) == 2, expected
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and expected in error[0], (expected, error)
    with pytest.raises(PretrainlabError, match="cannot feed"):
        ShardFeed(open_stream(str(tmp_path / "plain")).train, 4, 0, 0, 1, workers=4, shuffle_buffer=0)


def test_device_decoding_matches_worker_decoding() -> None:
    """`--gpu-decode`'s path (torchvision decode_jpeg + resize on the device), run here on the CPU."""
    from PIL import Image

    from pretrainlab.data.decode import decode_image
    from pretrainlab.data.device_decode import decode_batch

    rng = np.random.default_rng(0)
    encoded = []
    for height, width in [(20, 16), (16, 24), (12, 12)]:
        smooth = np.kron(rng.integers(0, 256, (height // 4, width // 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(smooth).save(buffer, format="JPEG", quality=95)
        encoded.append(buffer.getvalue())
    payloads = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in encoded]
    payloads.append(torch.frombuffer(bytearray(b"\xff\xd8 broken"), dtype=torch.uint8))
    batch, skipped = decode_batch(payloads, 12, 1.0, "RGB", torch.device("cpu"))
    assert batch.shape == (4, 12, 12, 3) and skipped == 1
    for row, data in enumerate(encoded):
        expected = torch.from_numpy(decode_image(data, 12, "RGB")).float()
        assert (batch[row].float() - expected).abs().mean() < 6, row
