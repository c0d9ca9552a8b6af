"""Tokenizers of the text models trained from scratch: word-level (built from the captions) or byte-level.

A tokenizer turns captions into fixed-length id rows `[BOS, tokens..., EOS, PAD...]` (B, max_length);
text models pool at EOS (CLIP's text transformer does) and language models predict the next id. It is
saved with the run (JSON, `to_dict`), so a run's text side can be rebuilt without its caption file.

- `word`: lower-cased words, numbers and single punctuation marks; the vocabulary is every token of the
  caption set seen at least `min_count` times (most frequent first, ties alphabetical, so the same
  captions always give the same ids); unseen words become UNK. Short sequences, so tiny models learn fast.
- `byte`: the UTF-8 bytes (256 ids after the specials); nothing is unknown, sequences are longer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch

from pretrainlab.errors import PretrainlabError
from pretrainlab.registry import Registry

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
WORD_PATTERN = re.compile(r"[a-z0-9]+(?:['/-][a-z0-9]+)*|[^\sa-z0-9]")


class Tokenizer:
    """Base: `ids` per text, padded rows, decoding."""

    kind = ""

    def __init__(self, max_length: int) -> None:
        if max_length < 3:
            raise PretrainlabError(f"a tokenizer's max_length must be >= 3 (BOS, a token, EOS), got {max_length}")
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def ids(self, text: str) -> list[int]:
        raise NotImplementedError

    def tokens_to_text(self, ids: list[int]) -> str:
        raise NotImplementedError

    def encode(self, texts: Iterable[str]) -> torch.Tensor:
        """texts -> int64 (B, max_length): BOS, ids cut to fit, EOS, then PAD."""
        rows = []
        for text in texts:
            body = self.ids(text)[: self.max_length - 2]
            rows.append([BOS, *body, EOS] + [PAD] * (self.max_length - 2 - len(body)))
        return torch.tensor(rows, dtype=torch.int64).reshape(-1, self.max_length)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """One row of ids -> text, stopping at the first EOS or PAD after the start."""
        body = []
        for value in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if value == BOS and not body:
                continue
            if value in (EOS, PAD):
                break
            body.append(int(value))
        return self.tokens_to_text(body)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "max_length": self.max_length}


class WordTokenizer(Tokenizer):
    kind = "word"

    def __init__(self, vocabulary: list[str], max_length: int = 32) -> None:
        super().__init__(max_length)
        if list(vocabulary[: len(SPECIALS)]) != list(SPECIALS):
            raise PretrainlabError(f"a word vocabulary starts with the special tokens {SPECIALS}")
        self.vocabulary = list(vocabulary)
        self.index = {word: position for position, word in enumerate(self.vocabulary)}

    @staticmethod
    def split(text: str) -> list[str]:
        return WORD_PATTERN.findall(text.lower())

    @classmethod
    def build(cls, texts: Iterable[str], max_length: int = 32, min_count: int = 1,
              max_vocabulary: int = 20_000) -> WordTokenizer:
        counts = Counter(word for text in texts for word in cls.split(text))
        if not counts:
            raise PretrainlabError("cannot build a word tokenizer: the captions hold no words")
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *words[: max_vocabulary - len(SPECIALS)]], max_length)

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def ids(self, text: str) -> list[int]:
        return [self.index.get(word, UNK) for word in self.split(text)]

    def tokens_to_text(self, ids: list[int]) -> str:
        text = " ".join(self.vocabulary[i] if 0 <= i < len(self.vocabulary) else "<unk>" for i in ids)
        return re.sub(r" ([,.;:!?])", r"\1", text)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "vocabulary": self.vocabulary}


class ByteTokenizer(Tokenizer):
    kind = "byte"

    @classmethod
    def build(cls, texts: Iterable[str], max_length: int = 96, **_: Any) -> ByteTokenizer:
        return cls(max_length)

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + 256

    def ids(self, text: str) -> list[int]:
        return [len(SPECIALS) + value for value in text.encode("utf-8")]

    def tokens_to_text(self, ids: list[int]) -> str:
        return bytes(i - len(SPECIALS) for i in ids if i >= len(SPECIALS)).decode("utf-8", errors="replace")


TOKENIZERS: Registry[type[Tokenizer]] = Registry("tokenizer")
TOKENIZERS.register("word")(WordTokenizer)
TOKENIZERS.register("byte")(ByteTokenizer)


def build_tokenizer(kind: str, texts: Iterable[str], max_length: int) -> Tokenizer:
    """A tokenizer of `kind` ("word" or "byte") for `texts` (the training captions)."""
    return TOKENIZERS.get(kind).build(texts, max_length=max_length)


def tokenizer_from_dict(values: dict[str, Any]) -> Tokenizer:
    kind = TOKENIZERS.get(values.get("kind", ""))
    if kind is WordTokenizer:
        return WordTokenizer(values["vocabulary"], int(values["max_length"]))
    return kind(int(values["max_length"]))
