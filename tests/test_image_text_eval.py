"""Zero-shot classification and image-text retrieval: recall against brute force, prompt ensembling, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrainlab.backbones.text.tower import TextTower
from pretrainlab.cli import main
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.image_text import ImageTextModel
from pretrainlab.eval.protocols.image_text_retrieval import image_text_recalls
from pretrainlab.eval.protocols.zero_shot import check_templates, class_embeddings, zero_shot_scores


def brute_force_recalls(images: torch.Tensor, texts: torch.Tensor, owners: list[int], k: int) -> tuple[float, float]:
    """Loops: sort every image's captions and every caption's images by similarity."""
    image_hits = 0
    for i in range(len(images)):
        ranked = sorted(range(len(texts)), key=lambda t: -float(images[i] @ texts[t]))[:k]
        image_hits += any(owners[t] == i for t in ranked)
    text_hits = 0
    for t in range(len(texts)):
        ranked = sorted(range(len(images)), key=lambda i: -float(images[i] @ texts[t]))[:k]
        text_hits += owners[t] in ranked
    return 100 * image_hits / len(images), 100 * text_hits / len(texts)


def test_image_text_recalls_match_brute_force() -> None:
    generator = torch.Generator().manual_seed(0)
    owners = [i for i in range(12) for _ in range(1 + i % 3)]  # 1 to 3 captions per image
    images = F.normalize(torch.randn(12, 6, generator=generator), dim=1)
    texts = F.normalize(images[owners] + 0.9 * torch.randn(len(owners), 6, generator=generator), dim=1)
    scores = image_text_recalls(images, texts, torch.tensor(owners))
    for k in (1, 5, 10):
        image_to_text, text_to_image = brute_force_recalls(images, texts, owners, k)
        assert scores[f"i2t_recall@{k}"] == pytest.approx(image_to_text)
        assert scores[f"t2i_recall@{k}"] == pytest.approx(text_to_image)
    assert 0 < scores["i2t_recall@1"] < 100 and scores["rsum"] == pytest.approx(sum(
        v for key, v in scores.items() if key != "rsum"))


class DigitWords:
    """A stand-in text encoder: one-hot of the first digit in the text, plus a constant for prompt words."""

    embed_dim = 11
    name = "digit-words"

    def encode(self, texts: list[str], device: torch.device | None = None) -> torch.Tensor:
        rows = torch.zeros(len(texts), self.embed_dim)
        for row, text in enumerate(texts):
            digits = [int(c) for c in text if c.isdigit()]
            rows[row, digits[0] if digits else 10] = 1.0
            rows[row, 10] += 0.1 * len(text.split())
        return rows


def test_zero_shot_ensembles_prompts_and_classifies() -> None:
    tower = TextTower(DigitWords(), 11)
    with torch.no_grad():
        tower.projection.weight.copy_(torch.eye(11))
    model = ImageTextModel(tower, torch.eye(11)[:, :10], 1.0)  # image features (N, 10) -> joint space (N, 11)
    classes = [str(d) for d in range(10)]
    templates = check_templates(["{}", "a photo of {}."])
    embeddings = class_embeddings(model, classes, templates)
    assert embeddings.shape == (10, 11)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(10))
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    scores = zero_shot_scores(model, F.one_hot(labels, 10).float(), classes, templates)
    assert torch.equal(scores.argmax(dim=1), labels)
    with pytest.raises(PretrainlabError, match="one"):
        check_templates(["a photo"])


def test_zero_shot_without_class_names_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "plain.npz", x_train=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
             y_train=np.arange(20) % 2, x_test=rng.integers(0, 255, (6, 8, 8), dtype=np.uint8),
             y_test=np.arange(6) % 2)
    code = main(["eval", "timm:tinycnn", "--data", f"npz:{tmp_path / 'plain.npz'}", "--protocol", "zero_shot",
                 "--no-store"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error and "class names" in error
    code = main(["eval", "timm:tinycnn", "--data", "builtin", "--protocol", "zero_shot", "--no-store"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "text tower" in error
    code = main(["eval", "timm:tinycnn", "--data", "composed:builtin:8", "--protocol", "image_text_retrieval",
                 "--no-store"])
    assert code == 2 and "captions" in capsys.readouterr().err
