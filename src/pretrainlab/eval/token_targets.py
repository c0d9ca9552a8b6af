"""Evaluating token backbones on token files: the pairing check and the normalisation that yields code bytes."""

from __future__ import annotations

from pretrainlab.backbones.token_vit import check_token_pairing
from pretrainlab.data.source import ImageSource
from pretrainlab.data.tokens.token_file import BYTE
from pretrainlab.eval.target import EvalTarget


def fit_token_target(target: EvalTarget, source: ImageSource) -> None:
    """Refuses a token file of another tokenizer (or pixels for a token backbone, or codes for a pixel one) in one
    line; gives a token target without recorded statistics (a timm: baseline) the code-byte normalisation."""
    tokenizer = getattr(source, "tokenizer", None)
    model = getattr(target.backbone, "model", None)
    if model is None:  # a selected representation wraps the backbone; its inner model is checked when built
        return
    check_token_pairing(model, target.label, tokenizer, source.spec)
    if tokenizer is not None and target.mean is None:
        target.mean, target.std = (0.0,) * source.channels, (BYTE,) * source.channels


# Protocols that only read frozen pooled features of the stored grids; the others transform pixels (crops, flips,
# corruptions, attacks, random inputs), which on code indices would measure nothing.
CODE_GRID_PROTOCOLS = ("knn", "linear", "retrieval", "continual", "few_labels_linear")


def code_grid_reason(protocol: str, source: ImageSource) -> str | None:
    """Why `protocol` cannot run on a token file (None: it can, or the source holds pixels)."""
    if getattr(source, "tokenizer", None) is None or protocol in CODE_GRID_PROTOCOLS:
        return None
    return (f"transforms pixels, which the code grids of '{source.spec}' are not; on token files use "
            f"{', '.join(CODE_GRID_PROTOCOLS)}")
