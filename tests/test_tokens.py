"""Token datasets (SeiT++, arXiv 2312.10105): VQ round trip, storage bytes, the token file and its checks, the MTM
loss against a naive loop, TokenAdapt / ColorAdapt, and `tokenize` + pretrain + eval end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrainlab.cli import main
from pretrainlab.data.source import ImageSet, ImageSource
from pretrainlab.data.tokens.adapt import TokenAdapter, color_adapt, nearest_codes, token_adapt
from pretrainlab.data.tokens.storage import jpeg_bytes_of_offsets, packed_grid_bytes, pixel_bytes, token_grid_bytes
from pretrainlab.data.tokens.token_file import codes_as_images, codes_from_bytes
from pretrainlab.data.tokens.training import TokenizeConfig, train_tokenizer
from pretrainlab.data.views import to_float
from pretrainlab.losses.masked_tokens import masked_token_loss


def block_images(count: int, seed: int, size: int = 16, block: int = 4) -> np.ndarray:
    """uint8 (N, size, size, 1): every block x block cell is black (20) or white (230), at random."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 2, (count, size // block, size // block))
    images = np.where(cells, 230, 20).astype(np.uint8).repeat(block, 1).repeat(block, 2)
    return images[..., None]


def tiny_config(**changes: object) -> TokenizeConfig:
    values = dict(codebook_size=8, code_dim=4, hidden=16, downsample=2, vq_steps=150, adapt_steps=40,
                  batch_size=32, lr=3e-3, adapter_width=16)
    values.update(changes)
    return TokenizeConfig(**values)


@pytest.fixture(scope="module")
def block_tokenizer():
    source = ImageSource("blocks", ImageSet(block_images(256, 0), np.arange(256) % 2))
    return train_tokenizer(source, tiny_config(), show_progress=False)


def test_vq_round_trip_reconstructs_a_two_colour_block_image(block_tokenizer) -> None:
    """A block image whose 4x4 cells align with the 4x4 grid needs two codes; the round trip keeps every pixel
    within 0.1 of its value in [0, 1] (the two colours are 0.82 apart), far below a flat grey's 0.41."""
    image = to_float(torch.from_numpy(block_images(1, seed=99)))  # (1, 1, 16, 16), unseen
    with torch.no_grad():
        codes = block_tokenizer.vq.encode(image)
        reconstruction = block_tokenizer.vq.decode(codes)
    assert codes.shape == (1, 4, 4)
    error = (reconstruction - image).abs()
    assert float(error.max()) < 0.1, float(error.max())
    black, white = codes[0][image[0, 0, ::4, ::4] < 0.5], codes[0][image[0, 0, ::4, ::4] > 0.5]
    assert not set(black.tolist()) & set(white.tolist())  # no code stands for both colours


def test_storage_bytes_from_shapes() -> None:
    assert token_grid_bytes((7, 7), 256) == 49  # one byte per code
    assert token_grid_bytes((8, 8), 1024) == 128  # uint16 beyond 256 codes
    assert packed_grid_bytes((8, 8), 1024) == 64 * 10 / 8
    assert pixel_bytes((32, 32), 3) == 3072
    assert jpeg_bytes_of_offsets(np.array([0, 100, 250, 600])) == pytest.approx(200.0)
    codes = np.array([[[0, 255], [256, 1023]]])
    images = codes_as_images(codes, 1024)
    assert images.shape == (1, 2, 2, 3) and images.dtype == np.uint8
    back = codes_from_bytes(torch.from_numpy(images).permute(0, 3, 1, 2).float())
    assert back.tolist() == codes.tolist()


def test_masked_token_loss_matches_a_naive_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=generator)
    codes = torch.randint(0, 7, (3, 5), generator=generator)
    mask = torch.rand(3, 5, generator=generator) < 0.5
    mask[0, 0] = True
    smoothing = 0.1
    total, count = 0.0, 0
    for b in range(3):
        for n in range(5):
            if not mask[b, n]:
                continue
            scores = [float(v) for v in logits[b, n]]
            log_sum = math.log(sum(math.exp(v) for v in scores))
            log_probs = [v - log_sum for v in scores]
            total += -(1 - smoothing) * log_probs[int(codes[b, n])] - smoothing * sum(log_probs) / len(log_probs)
            count += 1
    assert float(masked_token_loss(logits, codes, mask, smoothing)) == pytest.approx(total / count, rel=1e-5)


def test_color_adapt_takes_the_partners_statistics_and_requantises() -> None:
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    codes = torch.tensor([[[0, 1], [0, 1]], [[2, 3], [2, 3]]])  # image 1 is image 0 shifted by 2 in both channels
    generator = torch.Generator().manual_seed(0)
    restyled = color_adapt(codes, codebook, 1.0, generator)
    assert restyled[0].tolist() == codes[1].tolist() and restyled[1].tolist() == codes[0].tolist()
    assert nearest_codes(torch.tensor([[[[0.9]], [[1.2]]]]), codebook).tolist() == [[[1]]]


def test_token_adapt_keeps_shapes_and_codes_in_range() -> None:
    adapter = TokenAdapter(code_dim=4, codebook_size=8, width=8)
    codes = torch.randint(0, 8, (6, 4, 4))
    out = token_adapt(codes, adapter, torch.randn(8, 4), 1.0, (0.25, 1.0), torch.Generator().manual_seed(0))
    assert out.shape == codes.shape and int(out.max()) < 8 and out.dtype == torch.int64
    assert torch.equal(token_adapt(codes, adapter, torch.randn(8, 4), 0.0, (0.25, 1.0),
                                   torch.Generator().manual_seed(0)), codes)


def _error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_tokenize_pretrain_eval_and_mismatches(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """tokenize -> mtm on test_vit_token -> eval; a pixel-transforming protocol on codes, a file of another
    tokenizer, pixels for a token backbone, codes for a pixel method, and an unknown spec are each one error line
    with exit 2."""
    data = tmp_path / "blocks.npz"
    np.savez(data, x_train=block_images(96, 1)[..., 0], y_train=np.arange(96) % 3,
             x_test=block_images(24, 2)[..., 0], y_test=np.arange(24) % 3)
    tokens = tmp_path / "tokens.npz"
    flags = ["--codebook-size", "8", "--code-dim", "4", "--hidden", "8", "--vq-steps", "20", "--adapt-steps", "5",
             "--batch-size", "16", "--no-progress"]
    assert main(["tokenize", f"npz:{data}", "--out", str(tokens), *flags, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["storage"]["token_grid_bytes"] == 16 and summary["storage"]["pixel_bytes"] == 256
    assert summary["meta"]["images"] == {"train": 96, "test": 24}
    assert summary["storage"]["file_bytes_per_image"] == pytest.approx(tokens.stat().st_size / 120)
    with np.load(tokens) as archive:  # what the file holds: one byte per code, the labels, the tokenizer
        assert archive["codes_train"].dtype == np.uint8 and archive["codes_train"].shape == (96, 4, 4)
        assert archive["y_test"].tolist() == (np.arange(24) % 3).tolist()
        assert any(key.startswith("vq/") for key in archive.files)
    run = tmp_path / "run"
    base = ["pretrain", "--data", f"tokens:{tokens}", "--epochs", "1", "--batch-size", "16", "--no-progress",
            "--knn-every", "0", "--option", "decoder_dim=16", "--option", "decoder_depth=1",
            "--option", "decoder_heads=2"]
    code = main([*base, "--method", "mtm", "--backbone", "test_vit_token", "--out", str(run)])
    assert code == 0, capsys.readouterr().err[-3000:]
    capsys.readouterr()
    assert main(["eval", str(run), "--data", f"tokens:{tokens}", "--protocol", "knn", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["value"] > 0
    assert main(["eval", str(run), "--data", f"tokens:{tokens}", "--protocol", "corruption"]) == 2
    assert "transforms pixels" in _error_line(capsys)
    other = tmp_path / "other.npz"
    assert main(["tokenize", f"npz:{data}", "--out", str(other), *flags, "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--data", f"tokens:{other}", "--protocol", "knn"]) == 2
    assert "another tokenizer" in _error_line(capsys)
    assert main(["eval", "timm:vit_token_nano", "--data", f"tokens:{tokens}", "--protocol", "knn"]) == 2
    assert "8 codes" in _error_line(capsys)  # the file's 8 codes against the model's default 256
    assert main(["eval", str(run), "--data", f"npz:{data}", "--protocol", "knn"]) == 2
    assert "takes code grids" in _error_line(capsys)
    assert main([*base[:-6], "--method", "simclr", "--backbone", "test_vit_token", "--out", str(tmp_path / "s")]) == 2
    assert "scramble code grids" in _error_line(capsys)
    assert main(["eval", str(run), "--data", f"tokens:{data}", "--protocol", "knn"]) == 2
    assert "not a token file" in _error_line(capsys)  # an image npz is no token file
    assert main(["tokenize", "nosuchkind:x", "--out", str(tmp_path / "t.npz")]) == 2
    assert "unknown dataset kind" in _error_line(capsys)


def test_grid_resampling_baseline_crops_and_flips_the_grid() -> None:
    from pretrainlab.data.tokens.training import nearest_resample

    codes = torch.arange(16).reshape(1, 4, 4)
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert torch.equal(nearest_resample(codes, whole, torch.tensor([False])), codes)
    assert torch.equal(nearest_resample(codes, whole, torch.tensor([True])), codes.flip(-1))
    corner = nearest_resample(codes, torch.tensor([[0.5, 0.5, 1.0, 1.0]]), torch.tensor([False]))
    assert corner.tolist() == [[[10, 10, 11, 11], [10, 10, 11, 11], [14, 14, 15, 15], [14, 14, 15, 15]]]
