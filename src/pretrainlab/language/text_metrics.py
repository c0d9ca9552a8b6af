"""Caption quality: corpus BLEU-4, CIDEr-D and exact match of the object words.

BLEU: Papineni et al., "BLEU: a Method for Automatic Evaluation of Machine Translation" (ACL 2002):
the geometric mean of the modified (clipped) n-gram precisions, n = 1..4, pooled over the corpus,
times the brevity penalty exp(1 - r / c) when the hypotheses' total length c is below the effective
reference length r (for each hypothesis the reference length closest to its own). No smoothing, as in
the COCO caption evaluation; values in percent.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

WORD = re.compile(r"[a-z0-9]+(?:['/-][a-z0-9]+)*|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks (the word tokenizer's split)."""
    return WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]],
                max_n: int = 4) -> float:
    """Corpus BLEU-`max_n` in percent of tokenised hypotheses, each with one or more tokenised references."""
    matched, total = [0] * max_n, [0] * max_n
    hypothesis_length = reference_length = 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        hypothesis_length += len(hypothesis)
        reference_length += min((len(r) for r in refs), key=lambda length: (abs(length - len(hypothesis)), length))
        for n in range(1, max_n + 1):
            counts = ngrams(hypothesis, n)
            most = Counter()
            for ref in refs:
                most |= ngrams(ref, n)  # the clip: the most times an n-gram occurs in any one reference
            matched[n - 1] += sum(min(count, most[gram]) for gram, count in counts.items())
            total[n - 1] += max(len(hypothesis) - n + 1, 0)
    if min(matched) == 0 or hypothesis_length == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matched, total, strict=True)) / max_n
    brevity = 1.0 if hypothesis_length > reference_length else math.exp(1 - reference_length / hypothesis_length)
    return 100 * brevity * math.exp(log_precision)


def object_words(text: str, names: Sequence[str]) -> set[str]:
    """The object names (lower-cased; multi-word names as phrases) that `text` mentions as whole words."""
    tokens = words(text)
    joined = f" {' '.join(tokens)} "
    return {name.lower() for name in names if f" {' '.join(words(name))} " in joined}


def object_exact_match(generated: Sequence[str], references: Sequence[Sequence[str]], names: Sequence[str]) -> float:
    """Percent of images whose generated caption names exactly the objects their references name (as sets)."""
    hits = 0
    for text, refs in zip(generated, references, strict=True):
        truth = set().union(*(object_words(ref, names) for ref in refs))
        hits += object_words(text, names) == truth
    return 100 * hits / max(len(generated), 1)


def object_f1(generated: Sequence[str], references: Sequence[Sequence[str]], names: Sequence[str]) -> float:
    """Micro F1 in percent of the object names mentioned against those the references mention (as sets)."""
    true_positive = false_positive = false_negative = 0
    for text, refs in zip(generated, references, strict=True):
        truth = set().union(*(object_words(ref, names) for ref in refs))
        said = object_words(text, names)
        true_positive += len(said & truth)
        false_positive += len(said - truth)
        false_negative += len(truth - said)
    return 100 * 2 * true_positive / max(2 * true_positive + false_positive + false_negative, 1)


def _tfidf(tokens: Sequence[str], log_documents: float, frequency: list[Counter], max_n: int
           ) -> tuple[list[dict[tuple, float]], list[float]]:
    """Per n: {n-gram: count x (log N - log df)} and the vector's L2 norm (CIDEr's term weighting)."""
    vectors, norms = [], []
    for n in range(1, max_n + 1):
        vector = {gram: count * (log_documents - math.log(max(1.0, frequency[n - 1][gram])))
                  for gram, count in ngrams(tokens, n).items()}
        vectors.append(vector)
        norms.append(math.sqrt(sum(value * value for value in vector.values())))
    return vectors, norms


def cider_d(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], max_n: int = 4,
            sigma: float = 6.0) -> float:
    """Corpus CIDEr-D (x10, as the COCO caption evaluation reports it) of tokenised hypotheses and references.

    Vedantam, Zitnick, Parikh, "CIDEr: Consensus-based Image Description Evaluation", arXiv 1411.5726, in
    its CIDEr-D form: each caption is a tf-idf vector of its n-grams (n = 1..4; term count x log(images /
    images whose references hold the n-gram), document frequencies from the references of the evaluated
    set); per n, the hypothesis vector is clipped to the reference's (min of the two weights, so repeating a
    word earns nothing), dotted with the reference and divided by both norms, times the Gaussian length
    penalty exp(-(len(hyp) - len(ref))^2 / (2 sigma^2)); averaged over n and over the image's references,
    times 10, then averaged over images. An n-gram-free caption scores 0.
    """
    frequency = [Counter() for _ in range(max_n)]
    for refs in references:
        for n in range(1, max_n + 1):
            frequency[n - 1].update(set().union(*(ngrams(ref, n) for ref in refs)))  # images, not captions
    log_documents = math.log(max(len(references), 1))
    total = 0.0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        hyp_vectors, hyp_norms = _tfidf(hypothesis, log_documents, frequency, max_n)
        score = 0.0
        for ref in refs:
            ref_vectors, ref_norms = _tfidf(ref, log_documents, frequency, max_n)
            penalty = math.exp(-((len(hypothesis) - len(ref)) ** 2) / (2 * sigma**2))
            for hyp_vector, ref_vector, hyp_norm, ref_norm in zip(hyp_vectors, ref_vectors, hyp_norms, ref_norms,
                                                                    strict=True):
                if hyp_norm == 0 or ref_norm == 0:
                    continue
                dot = sum(min(weight, ref_vector.get(gram, 0.0)) * ref_vector.get(gram, 0.0)
                          for gram, weight in hyp_vector.items())
                score += penalty * dot / (hyp_norm * ref_norm)
        total += 10 * score / (max_n * max(len(refs), 1))
    return total / max(len(hypotheses), 1)
