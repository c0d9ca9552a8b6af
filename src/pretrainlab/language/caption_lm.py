"""A small causal language model trained from scratch on a caption set: the frozen LM of the LiMBeR probe.

LiMBeR (Merullo et al., "Linearly Mapping from Image to Text Space", arXiv 2209.15162) freezes GPT-J and
learns only a linear map from image features into its input embeddings. Offline and on a CPU, the frozen
LM here is a GPT-style model (backbones/text/transformer.py with an output layer tied to the token
embeddings, as GPT-2) trained on the training captions alone, with a word tokenizer built from them.

Prefix slots: the LM always reads `prefix_tokens` input positions before the caption's BOS (so a caption
always starts at the same position). A pre-trained LM continues what its context suggests; a model
trained on bare captions learns to ignore slots that never vary (measured: free prefix vectors optimised
directly could not lower its loss at all). So the LM is trained as a keywords-to-caption model, on text
only: its slots hold the token embeddings of words drawn from the caption itself, rare words more often
(inverse frequency: objects and places rather than "a"), and a quarter of the captions get no keywords
(BOS in every slot), so the LM also captions from an empty context.
LiMBeR then fills the slots with linearly mapped image features, which the LM has never seen, as GPT-J
had never seen image prefixes: the map must place them where the right words would steer the LM.

Trained LMs are cached on disk (the data cache folder) under a hash of the captions and the settings:
every backbone probed on one caption set meets the same frozen LM, and only the first probe pays for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pretrainlab.atomic import atomic_path
from pretrainlab.backbones.text.tokenizer import BOS, EOS, PAD, Tokenizer, WordTokenizer, tokenizer_from_dict
from pretrainlab.backbones.text.transformer import TextTransformer
from pretrainlab.data.cache import cache_dir

log = logging.getLogger(__name__)

RECIPE = "keywords-inverse-frequency-1"  # part of the cache key: change it when the training recipe changes


@dataclass(frozen=True)
class CaptionLMConfig:
    """Args:
        width, depth, heads: the transformer.
        max_length: caption tokens including BOS and EOS.
        prefix_tokens: input slots before the caption, for LiMBeR's mapped image features.
        epochs, batch_size, lr: next-token training (AdamW, cosine decay) on the training captions.
        seed: initial weights and caption order.
    """

    width: int = 64
    depth: int = 2
    heads: int = 4
    max_length: int = 32
    prefix_tokens: int = 4
    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0


class CaptionLanguageModel(nn.Module):
    """Causal LM over `prefix_tokens` prefix slots + a caption; logits from the tied token embeddings."""

    def __init__(self, tokenizer: Tokenizer, config: CaptionLMConfig) -> None:
        super().__init__()
        self.tokenizer, self.config = tokenizer, config
        self.transformer = TextTransformer(tokenizer.vocab_size, config.width, config.depth, config.heads,
                                           config.prefix_tokens + tokenizer.max_length, causal=True)

    @property
    def width(self) -> int:
        return self.config.width

    def logits(self, ids: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, L) caption tokens, prefix (B, P, W) or None (BOS in the slots) -> logits (B, L, V) at the
        caption positions: row t predicts token t + 1."""
        embeddings = self.transformer.token_embedding(ids)  # (B, L, W)
        if prefix is None:
            bos = self.transformer.token_embedding.weight[BOS]
            prefix = bos.expand(ids.shape[0], self.config.prefix_tokens, -1)
        hidden = self.transformer.forward_embeddings(torch.cat([prefix.to(embeddings.dtype), embeddings], dim=1))
        return hidden[:, prefix.shape[1] :] @ self.transformer.token_embedding.weight.T

    def caption_loss(self, ids: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy over the caption's real tokens (padding ignored)."""
        logits = self.logits(ids[:, :-1], prefix)  # (B, L - 1, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=PAD)

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor | None, count: int, max_new_tokens: int = 30) -> list[str]:
        """Greedy captions for `count` prefixes (B, P, W) (or none): the most likely next word until EOS."""
        device = self.transformer.position_embedding.device
        ids = torch.full((count, 1), BOS, dtype=torch.int64, device=device)
        finished = torch.zeros(count, dtype=torch.bool, device=device)
        for _ in range(min(max_new_tokens, self.tokenizer.max_length - 1)):
            following = self.logits(ids, prefix)[:, -1].argmax(dim=-1)  # (B,)
            following = torch.where(finished, torch.full_like(following, PAD), following)
            ids = torch.cat([ids, following[:, None]], dim=1)
            finished |= following == EOS
            if bool(finished.all()):
                break
        return [self.tokenizer.decode(row) for row in ids.cpu()]


def keyword_weights(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(V,) inverse frequency of each token in the captions ids (N, L): rare words are the informative keywords."""
    counts = torch.bincount(ids.flatten(), minlength=vocab_size).float()
    return 1.0 / counts.clamp(min=1)


def keyword_prefix(model: CaptionLanguageModel, ids: torch.Tensor, weights: torch.Tensor, generator: torch.Generator,
                   empty_share: float = 0.25) -> torch.Tensor:
    """(B, P, W): the embeddings of up to P distinct words drawn from each caption (ids (B, L)), BOS elsewhere.

    Words are drawn without replacement with probability proportional to `weights` (inverse frequency,
    Gumbel top-k), so the keywords are mostly the words that tell captions apart (objects, places) rather
    than "a" and "the"."""
    slots = model.config.prefix_tokens
    words = ids > EOS + 1  # real words: not PAD, BOS, EOS or UNK
    gumbel = -torch.log(-torch.log(torch.rand(ids.shape, generator=generator).clamp(1e-9, 1 - 1e-9)))
    scores = (weights[ids].log() + gumbel).masked_fill(~words, float("-inf"))
    picked = scores.topk(min(slots, ids.shape[1]), dim=1)  # (B, P)
    chosen = torch.where(picked.values > float("-inf"), ids.gather(1, picked.indices),
                         torch.full_like(picked.indices, BOS))
    chosen[torch.rand(len(ids), generator=generator) < empty_share] = BOS
    if chosen.shape[1] < slots:
        chosen = torch.cat([chosen, torch.full((len(ids), slots - chosen.shape[1]), BOS)], dim=1)
    return model.transformer.token_embedding(chosen)


def train_caption_lm(captions: list[str], config: CaptionLMConfig) -> CaptionLanguageModel:
    """Trains a fresh LM on `captions` (next-token cross-entropy), in eval mode and frozen on return."""
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = CaptionLanguageModel(WordTokenizer.build(captions, config.max_length), config)
    ids = model.tokenizer.encode(captions)  # (N, L)
    weights = keyword_weights(ids, model.tokenizer.vocab_size)
    batch = min(config.batch_size, len(ids))
    steps = config.epochs * (len(ids) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    step, loss = 0, torch.tensor(float("nan"))
    for _ in range(config.epochs):
        order = torch.randperm(len(ids), generator=generator)
        for start in range(0, len(ids) - batch + 1, batch):
            rows = ids[order[start : start + batch]]
            loss = model.caption_loss(rows, keyword_prefix(model, rows, weights, generator))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
    log.info("caption LM: %d steps on %d captions, last loss %.3f", step, len(captions), float(loss.detach()))
    return model.eval().requires_grad_(False)


def cached_caption_lm(captions: list[str], config: CaptionLMConfig) -> CaptionLanguageModel:
    """`train_caption_lm`, trained once per (captions, settings) and kept in the data cache folder."""
    digest = hashlib.sha256(json.dumps([RECIPE, captions, asdict(config)]).encode()).hexdigest()[:24]
    path = Path(cache_dir()) / f"caption-lm-{digest}.safetensors"
    if path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            tokenizer = tokenizer_from_dict(json.loads(handle.metadata()["tokenizer"]))
        model = CaptionLanguageModel(tokenizer, config)
        model.load_state_dict(load_file(str(path)))
        return model.eval().requires_grad_(False)
    model = train_caption_lm(captions, config)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"tokenizer": json.dumps(model.tokenizer.to_dict())})
    return model
