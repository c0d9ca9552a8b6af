"""Collocated neural modules: object, attribute, relation and function modules mixed by a soft controller.

Yang, Zhang, Cai, "Learning to Collocate Neural Modules for Image Captioning" (CNM), arXiv 1904.08608.
A caption interleaves words of different kinds: nouns (what is there), adjectives (what it is like), verbs
and prepositions (how things relate) and function words ("a", "the", "and"), which need no image at all.
CNM gives each kind its own module and lets a controller decide, at every decoding step from the decoder
state, how much of each module's output feeds the next word:

- object, attribute, relation: three visual modules, each attending over the image regions with its own
  parameters (the paper feeds them features from an object, an attribute and a relation encoder); the
  relation module first lets the regions attend to each other (multi-head self-attention), so its output
  can carry "the 3 above the 7";
- function: a non-visual module, a function of the decoder state alone;
- controller: softmax weights over the four modules from the decoder state; the output is the weighted
  sum of the modules' outputs (the paper's soft fusion: a hard choice cannot be trained by back-propagation
  and fails when the state is ambiguous), optionally refined over several reasoning steps (the query is
  moved by the fused output and the modules run again, the paper's multi-step execution);
- linguistic loss: the paper supervises the controller with the part of speech of the ground-truth word
  (noun -> object, adjective -> attribute, verb / preposition -> relation, other -> function), so each
  module specialises. Offline there is no POS tagger; `module_tags` tags words with a small lexicon that
  covers the synthetic canvas captions (object names, position and number words, relation words).

Here the "regions" are the cells of a frozen backbone's last feature map (B, N, C), with a learned
position embedding per cell (positions and relations are what the canvas captions talk about).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrainlab.backbones.text.tokenizer import PAD, WordTokenizer

OBJECT, ATTRIBUTE, RELATION, FUNCTION = 0, 1, 2, 3
MODULE_NAMES = ("object", "attribute", "relation", "function")
NO_TAG = -100  # cross-entropy's ignore index: padding and the BOS input
ATTRIBUTE_WORDS = frozenset({"top", "bottom", "left", "right", "one", "two", "three", "four", "five", "six",
                             "seven", "eight", "nine", "ten", "zero", "small", "large", "big"})
RELATION_WORDS = frozenset({"above", "below", "under", "over", "beside", "near", "behind", "on", "in", "of",
                            "holding", "with", "next"})


def word_tag(word: str, following: str | None, object_words: frozenset[str]) -> int:
    """The module a word should come from: 'left' in 'left of' is a relation, in 'top left' an attribute."""
    if word in object_words:
        return OBJECT
    if word in ("left", "right") and following == "of":
        return RELATION
    if word in ATTRIBUTE_WORDS:
        return ATTRIBUTE
    if word in RELATION_WORDS:
        return RELATION
    return FUNCTION


def module_tags(ids: torch.Tensor, tokenizer: WordTokenizer, object_names: Sequence[str]) -> torch.Tensor:
    """ids (B, L) -> (B, L) int64 module index per token (`NO_TAG` for padding, BOS and EOS is FUNCTION)."""
    object_words = frozenset(word for name in object_names for word in WordTokenizer.split(name))
    vocabulary = tokenizer.vocabulary
    rows = ids.tolist()  # plain ints in and out: indexing a tensor per token is slow
    tags = [[NO_TAG] * len(row_ids) for row_ids in rows]
    for row_ids, row_tags in zip(rows, tags, strict=True):
        tokens = [vocabulary[i] for i in row_ids]
        for position in range(1, len(tokens)):
            if row_ids[position] == PAD:
                break
            following = tokens[position + 1] if position + 1 < len(tokens) else None
            row_tags[position] = word_tag(tokens[position], following, object_words)
    return torch.tensor(tags, dtype=ids.dtype, device=ids.device).reshape(ids.shape)


def attend_cells(cells: torch.Tensor, key_queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K dot-product attentions over the same cells (B, N, C) at once, their queries already mapped into cell space
    (B, K, C) -> attention-pooled cells (B, K, C), weights (B, K, N).

    Dot-product attention with a key projection W_k scores a cell c by (W_k c) . q = c . (W_k^T q), and a value
    projection commutes with the weighted sum: so the query is mapped once into cell space and the value
    projection applied after pooling. Both products are then real batched matrix products instead of a
    (B, K, N, H) tensor per decoding step (measured: Bahdanau's additive form made a step 4x slower on the CPU)."""
    weights = torch.bmm(key_queries, cells.transpose(1, 2)).softmax(dim=-1)  # (B, K, N)
    return torch.bmm(weights, cells), weights


class CellAttention(nn.Module):
    """One module's attention over cells (B, N, C): its own key, value and query projections."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.key = nn.Linear(channels, width, bias=False)  # a key bias adds the same score to every cell: no effect
        self.value = nn.Linear(channels, width)
        self.query = nn.Linear(width, width, bias=False)

    def key_query(self, state: torch.Tensor) -> torch.Tensor:
        """Decoder state (B, H) -> W_k^T W_q state / sqrt(H) (B, C): the query in cell space."""
        return self.query(state) @ self.key.weight / self.key.out_features**0.5

    def forward(self, cells: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cells (B, N, C), state (B, H) -> context (B, H), weights (B, N)."""
        pooled, weights = attend_cells(cells, self.key_query(state)[:, None])
        return self.value(pooled[:, 0]), weights[:, 0]


class RelationModule(CellAttention):
    """Cells attend to each other (multi-head self-attention + residual), then the query attends over them."""

    def __init__(self, channels: int, width: int, heads: int = 4) -> None:
        super().__init__(width, width)
        self.project = nn.Linear(channels, width)
        self.mix = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)

    def relate(self, cells: torch.Tensor) -> torch.Tensor:
        """cells (B, N, C) -> (B, N, H) cells that carry their context; once per image batch."""
        x = self.project(cells)
        return self.norm(x + self.mix(x, x, x, need_weights=False)[0])


class CollocatedModules(nn.Module):
    """CNM's four modules and soft controller: (prepared cells, state (B, H)) -> fused (B, H), weights (B, 4)."""

    def __init__(self, channels: int, width: int, reasoning_steps: int = 1) -> None:
        super().__init__()
        self.object, self.attribute = CellAttention(channels, width), CellAttention(channels, width)
        self.relation = RelationModule(channels, width)
        self.function = nn.Sequential(nn.Linear(width, width), nn.ReLU())  # no visual input: function words
        self.controller = nn.Linear(width, len(MODULE_NAMES))
        self.reasoning_steps = reasoning_steps

    def prepare(self, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return cells, self.relation.relate(cells)

    def forward(self, prepared: tuple[torch.Tensor, torch.Tensor], state: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        cells, related = prepared
        query = state
        for _ in range(self.reasoning_steps):
            key_queries = torch.stack([self.object.key_query(query), self.attribute.key_query(query)], dim=1)
            pooled, _ = attend_cells(cells, key_queries)  # (B, 2, C): object and attribute share the cells
            outputs = [self.object.value(pooled[:, 0]), self.attribute.value(pooled[:, 1]),
                       self.relation(related, query)[0], self.function(query)]
            weights = self.controller(query).softmax(dim=-1)  # (B, 4)
            fused = (weights[:, :, None] * torch.stack(outputs, dim=1)).sum(dim=1)  # (B, H)
            query = state + fused  # the next step's modules see what this step found
        return fused, weights


class PlainAttention(nn.Module):
    """The baseline's single soft attention over the cells (Show, Attend and Tell, arXiv 1502.03044)."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.attention = CellAttention(channels, width)

    def prepare(self, cells: torch.Tensor) -> torch.Tensor:
        return cells

    def forward(self, cells: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.attention(cells, state)[0], None


def linguistic_loss(weights: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the controller's weights (B, T, 4) against the module tags (B, T) of the words predicted."""
    log_weights = weights.clamp(min=1e-8).log()
    return F.nll_loss(log_weights.reshape(-1, weights.shape[-1]), tags.reshape(-1), ignore_index=NO_TAG)
