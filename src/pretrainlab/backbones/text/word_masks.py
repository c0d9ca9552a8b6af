"""BERT-style masking of word tokens for masked language modelling (MLM) conditioned on an image.

Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
arXiv 1810.04805, section 3.1, as UNITER (arXiv 1909.11740, section 3.2) uses it: 15 % of the word tokens
are chosen; of those, 80 % become [MASK], 10 % a random word, 10 % stay; the model predicts the original
word at every chosen position from the rest of the caption and the whole, unmasked image (UNITER's
conditional masking: only one modality is masked at a time). Special tokens (BOS, EOS, PAD) are never
chosen; every caption with a word gets at least one chosen position, so no row is wasted.
"""

from __future__ import annotations

import torch

from pretrainlab.backbones.text.tokenizer import SPECIALS
from pretrainlab.errors import PretrainlabError

IGNORE = -100  # cross_entropy's ignore_index: positions that are not predicted


def mask_words(ids: torch.Tensor, mask_id: int, vocab_size: int, generator: torch.Generator | None,
               probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, L) int64 -> (masked ids (B, L), targets (B, L): the original id where chosen, else IGNORE).

    Args:
        mask_id: id of the [MASK] token; vocab_size: ids drawn for random replacement are words in
            [len(SPECIALS), vocab_size).
        generator: draws on the ids' device (the step's generator, so resumed runs draw the same masks).
    """
    if not 0 < probability < 1:
        raise PretrainlabError(f"the masking probability must be in (0, 1), got {probability}")
    words = ids >= len(SPECIALS)  # (B, L): real words only (UNK included: it stands for a word)
    draws = torch.rand(ids.shape, generator=generator, device=ids.device)
    chosen = words & (draws < probability)
    # A caption with no chosen word gets its word of smallest draw chosen (at least one prediction per caption).
    first = torch.where(words, draws, torch.full_like(draws, 2.0)).argmin(dim=1)  # (B,)
    forced = torch.zeros_like(chosen).scatter_(1, first[:, None], True) & words
    chosen |= forced & ~chosen.any(dim=1, keepdim=True)
    action = torch.rand(ids.shape, generator=generator, device=ids.device)
    random_words = torch.randint(len(SPECIALS), vocab_size, ids.shape, generator=generator, device=ids.device)
    masked = torch.where(chosen & (action < 0.8), torch.full_like(ids, mask_id), ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_words, masked)
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return masked, targets
