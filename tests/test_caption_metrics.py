"""Caption scores against independent computations: corpus BLEU-4 against NLTK's, CIDEr-D against a case
computed by hand from the paper's definition (tf-idf n-gram vectors, clipping, Gaussian length penalty, x10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

from pretrainlab.language.text_metrics import cider_d, corpus_bleu, words


def test_corpus_bleu_matches_nltk_on_captions() -> None:
    references = [[words("a 3 at the top left and a 7 at the bottom left"), words("a 3 above a 7")],
                  [words("two objects: a 1 and a 5"), words("a 1 left of a 5")],
                  [words("a 9 at the top right, a 2 at the bottom left and a 2 at the bottom right")]]
    hypotheses = [words("a 3 at the top left and a 7 at the top right"), words("a 1 left of a 5 and a 5"),
                  words("a 9 at the top right and a 2 at the bottom left")]  # the last one is short: brevity penalty
    ours = corpus_bleu(hypotheses, references)
    assert 0 < ours < 100
    assert ours == pytest.approx(100 * nltk_corpus_bleu(references, hypotheses), abs=1e-9)


@pytest.mark.filterwarnings("ignore:\\s*The hypothesis contains 0 counts:UserWarning")  # NLTK's note on a BLEU of 0
def test_corpus_bleu_matches_nltk_on_random_corpora() -> None:
    rng = np.random.default_rng(0)
    vocabulary = list("abcdef")
    checked = 0
    for _ in range(30):
        def sentence() -> list[str]:
            return list(rng.choice(vocabulary, size=int(rng.integers(4, 12))))

        references = [[sentence() for _ in range(int(rng.integers(1, 4)))] for _ in range(int(rng.integers(1, 6)))]
        hypotheses = [sentence() for _ in references]
        expected = 100 * nltk_corpus_bleu(references, hypotheses)
        assert corpus_bleu(hypotheses, references) == pytest.approx(expected, abs=1e-9)
        checked += expected > 0
    assert checked >= 10  # most corpora have every n-gram order matched, so the values are not all 0


def test_cider_d_on_a_hand_computed_case() -> None:
    # Two images: references "x y" and "z", so each n-gram occurs in the references of one image of two and
    # weighs log(2 / 1) = L per occurrence (a term count of 2 weighs 2L).
    references = [[["x", "y"]], [["z"]]]
    hypotheses = [["x", "x", "y"], ["z"]]
    # image 1, n = 1: hyp (x: 2L, y: L), ref (x: L, y: L); clipped dot min(2L, L) L + L L = 2 L^2,
    # norms sqrt(5) L and sqrt(2) L -> 2 / sqrt(10). n = 2: hyp ((x, x): L, (x, y): L), ref ((x, y): L) -> 1 / sqrt(2).
    # n = 3, 4: the reference has none -> 0. Lengths 3 vs 2: penalty exp(-1 / 72).
    first = 10 * math.exp(-1 / 72) * (2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4
    second = 10 * 1 / 4  # unigram cosine 1, no longer n-grams
    assert cider_d(hypotheses, references) == pytest.approx((first + second) / 2, abs=1e-12)
    # without the clip the first unigram dot would be 3 L^2: repeating "x" must not pay
    unclipped = 10 * math.exp(-1 / 72) * (3 / math.sqrt(10) + 1 / math.sqrt(2)) / 4
    assert cider_d(hypotheses[:1], references[:1]) == pytest.approx(0.0)  # one image: idf log(1 / 1) = 0
    assert cider_d(hypotheses, references) < (unclipped + second) / 2


def test_cider_d_averages_over_references_and_rewards_consensus() -> None:
    references = [[words("a 3 above a 7"), words("a 7 below a 3")], [words("a 1")], [words("a 5")]]
    perfect = cider_d([words("a 3 above a 7"), words("a 1"), words("a 5")], references)
    wrong = cider_d([words("a 5 above a 1"), words("a 5"), words("a 1")], references)
    assert perfect > 3 * wrong and wrong >= 0
    assert cider_d([[], words("a 1"), words("a 5")], references) < perfect  # an empty caption scores 0
