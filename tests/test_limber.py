"""LiMBeR: BLEU-4 on known cases; the linear map into a frozen caption LM, checked on a constructed case."""

from __future__ import annotations

import math

import pytest
import torch

from pretrainlab.language.caption_lm import CaptionLMConfig, train_caption_lm
from pretrainlab.language.limber import LinearMapConfig, caption_quality, fit_linear_map, generate_captions
from pretrainlab.language.text_metrics import corpus_bleu, object_exact_match, object_f1, object_words, words


def test_bleu_known_values() -> None:
    assert corpus_bleu([words("a 3 above a 7")], [[words("a 3 above a 7")]]) == pytest.approx(100.0)
    # every n-gram matches, 4 words against a 6-word reference: only the brevity penalty exp(1 - 6/4) remains
    assert corpus_bleu([["a", "b", "c", "d"]], [[list("abcdef")]]) == pytest.approx(100 * math.exp(-0.5))
    # the closest reference length counts; a missing 4-gram gives 0 (no smoothing)
    assert corpus_bleu([["a", "b", "c", "d"]], [[list("abcd"), list("abcdef")]]) == pytest.approx(100.0)
    assert corpus_bleu([["a", "b", "c", "x"]], [[list("abcd")]]) == 0.0
    assert object_words("an 8 left of a 3, an ankle boot", ["3", "8", "Ankle boot", "1"]) == {"3", "8", "ankle boot"}
    generated, references = ["a 3 and a 7", "a 3"], [["a 7 and a 3"], ["a 3 and a 1"]]
    assert object_exact_match(generated, references, list("0137")) == 50.0
    assert object_f1(generated, references, list("0137")) == pytest.approx(100 * 6 / 7)  # 3 found, 1 missed


def constructed_case(count: int, generator: torch.Generator) -> tuple[torch.Tensor, list[list[str]], torch.Tensor]:
    """Images whose features are a noisy one-hot of their digit; captions name the digit."""
    digits = torch.randint(0, 10, (count,), generator=generator)
    features = torch.nn.functional.one_hot(digits, 10).float() + 0.1 * torch.randn(count, 10, generator=generator)
    return features, [[f"a {d}"] for d in digits.tolist()], digits


def test_linear_map_recovers_captions_from_features_that_hold_them() -> None:
    generator = torch.Generator().manual_seed(0)
    train_features, train_captions, _ = constructed_case(300, generator)
    test_features, test_captions, _ = constructed_case(60, generator)
    lm = train_caption_lm([c for pair in train_captions for c in pair],
                          CaptionLMConfig(width=32, depth=2, heads=2, max_length=5, prefix_tokens=1, epochs=40,
                                          batch_size=60, lr=3e-3))
    assert lm.generate(None, 1)[0] in {f"a {d}" for d in range(10)}
    config = LinearMapConfig(epochs=40, batch_size=60, lr=1e-2)
    mapping = fit_linear_map(train_features, train_captions, lm, config)
    assert all(not p.requires_grad for p in lm.parameters())  # the LM stayed frozen
    generated = generate_captions(mapping, lm, test_features)
    scores = caption_quality(generated, test_captions, [str(d) for d in range(10)])
    assert scores["object_exact_match"] >= 80, generated  # chance: about 10
    # the same map trained on features that carry nothing about the digit cannot name it
    shuffled = train_features[torch.randperm(len(train_features), generator=generator)]
    blind = fit_linear_map(shuffled, train_captions, lm, config)
    chance = caption_quality(generate_captions(blind, lm, test_features), test_captions, [str(d) for d in range(10)])
    assert chance["object_exact_match"] < 40
