"""M3I: the MI bound against a naive loop, each target's term by hand, and absent targets as one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pretrainlab.backbones import create_backbone
from pretrainlab.cli import main
from pretrainlab.config import build_config
from pretrainlab.data.captions import CAPTION_COUNTS, CAPTIONS, encode_captions
from pretrainlab.errors import PretrainlabError
from pretrainlab.losses.mutual_information import negative_mutual_information_bound
from pretrainlab.methods import METHODS, MethodContext


def naive_bound(predictions: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor, tau: float) -> float:
    """-mean_b log( sum_{k positive} exp(cos_bk / tau) / sum_k exp(cos_bk / tau) ), one number at a time."""
    total = 0.0
    for b in range(len(predictions)):
        weights = []
        for k in range(len(candidates)):
            cosine = float(predictions[b] @ candidates[k]) / (predictions[b].norm() * candidates[k].norm())
            weights.append(math.exp(cosine / tau))
        total -= math.log(sum(w for w, p in zip(weights, positives[b], strict=True) if p) / sum(weights))
    return total / len(predictions)


def test_bound_matches_naive_reference_with_several_positives() -> None:
    generator = torch.Generator().manual_seed(0)
    predictions, candidates = torch.randn(5, 4, generator=generator), torch.randn(6, 4, generator=generator)
    positives = torch.zeros(5, 6, dtype=torch.bool)
    positives[torch.arange(5), torch.arange(5)] = True
    positives[0, 5] = positives[3, 1] = True  # equal captions: two candidates are one target
    loss = negative_mutual_information_bound(predictions, candidates, positives, 0.3)
    assert float(loss) == pytest.approx(naive_bound(predictions, candidates, positives, 0.3), rel=1e-5)


def test_bound_with_one_positive_is_cross_entropy_and_needs_a_positive() -> None:
    predictions, candidates = torch.randn(4, 3), torch.randn(7, 3)
    labels = torch.tensor([0, 6, 2, 2])
    loss = negative_mutual_information_bound(predictions, candidates, F.one_hot(labels, 7).bool(), 0.5)
    logits = F.normalize(predictions, dim=1) @ F.normalize(candidates, dim=1).T / 0.5
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)
    with pytest.raises(ValueError, match="positive"):
        negative_mutual_information_bound(predictions, candidates, torch.zeros(4, 7, dtype=torch.bool), 0.5)


def tiny_m3i(targets: str, num_classes: int = 10, captions: tuple[str, ...] = ()):
    config = build_config(METHODS.get("m3i").config_class,
                          {"targets": targets, "embed_dim": 8, "hidden_dim": 16, "text_encoder": "transformer"}, "m3i")
    context = MethodContext(img_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=num_classes,
                            dataset_size=16, captions=captions)
    return METHODS.get("m3i")(create_backbone("tinycnn", 32, 3), config, context)


def test_label_and_caption_terms_by_hand(rgb_batch: torch.Tensor) -> None:
    captions = [[f"a {i % 3}"] for i in range(16)]  # 3 distinct captions: equal ones are joint positives
    method = tiny_m3i("view+label+caption", captions=tuple(c[0] for c in captions)).eval()
    labels = torch.arange(16) % 10
    batch = method.prepare_batch(rgb_batch, labels, torch.Generator().manual_seed(0))
    array, counts = encode_captions(captions)
    batch.extra.update({CAPTIONS: torch.from_numpy(array), CAPTION_COUNTS: torch.from_numpy(counts)})
    with torch.no_grad():
        outputs = method(batch)
    both = torch.cat([view.images for view in batch.views["global"]])
    joint = method.projection(method.backbone.pooled(both))  # (32, E)
    label_logits = F.normalize(method.label_decoder(joint), dim=1) @ F.normalize(method.class_embeddings, dim=1).T
    expected_label = F.cross_entropy(label_logits / 0.2, labels.repeat(2))
    assert float(outputs["label_loss"]) == pytest.approx(float(expected_label.detach()), rel=1e-5)
    text = method.text([c[0] for c in captions])  # (16, E)
    same = torch.tensor([[i % 3 == j % 3 for j in range(16)] for i in range(16)]).repeat(2, 1)
    expected_caption = naive_bound(method.caption_decoder(joint).detach(), text.detach(), same, 0.2)
    assert float(outputs["caption_loss"]) == pytest.approx(expected_caption, rel=1e-4)
    assert float(outputs["loss"]) == pytest.approx(float(outputs["view_loss"] + outputs["label_loss"]
                                                         + outputs["caption_loss"]), rel=1e-5)


def test_auto_uses_the_targets_the_batch_has(rgb_batch: torch.Tensor) -> None:
    method = tiny_m3i("auto", num_classes=0)
    assert method.label_decoder is None and method.text is None
    outputs = method(method.prepare_batch(rgb_batch, None, torch.Generator().manual_seed(0)))
    assert set(outputs) == {"loss", "view_loss"}
    labelled = tiny_m3i("auto")
    outputs = labelled(labelled.prepare_batch(rgb_batch, torch.arange(16) % 10, torch.Generator().manual_seed(0)))
    assert set(outputs) == {"loss", "view_loss", "label_loss"}


def test_named_targets_that_are_absent_fail_clearly(rgb_batch: torch.Tensor) -> None:
    with pytest.raises(PretrainlabError, match="'label' needs a labelled dataset"):
        tiny_m3i("view+label", num_classes=0)
    with pytest.raises(PretrainlabError, match="'caption' needs image-caption pairs"):
        tiny_m3i("caption")
    with pytest.raises(PretrainlabError, match="targets must be"):
        tiny_m3i("view+pixels")
    method = tiny_m3i("view+label")
    with pytest.raises(PretrainlabError, match="batch without labels"):
        method(method.prepare_batch(rgb_batch, None, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("option", ["targets=view+caption", "targets=label+label", "temperature=0"])
def test_cli_exit_2_one_line(option: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["pretrain", "--method", "m3i", "--backbone", "tinycnn", "--data", "builtin", "--max-train", "64",
                 "--epochs", "1", "--out", str(tmp_path / "run"), "--option", option])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error: ") and "\n" not in error, error
