"""Captioning probe: a small caption decoder trained on a frozen backbone's feature-map cells, plain vs CNM.

Yang, Zhang, Cai, "Learning to Collocate Neural Modules for Image Captioning" (CNM), arXiv 1904.08608. Two
decoders are trained on the same frozen, standardised last feature map (language/caption_decoder.py): the
plain one (an LSTM with one soft attention over the cells, Show, Attend and Tell) and the collocated one
(the same LSTM with CNM's object, attribute, relation and function modules mixed by a soft controller, the
controller supervised by the words' module tags; language/module_collocation.py). Both see the same
captions in the same order (each epoch every image contributes one of its captions, drawn by the seed),
the same steps and learning rate; the vocabulary is the training captions' words.

Metrics on the test split, greedy captions against all of each image's captions: `bleu4@DECODER` (corpus
BLEU-4, %) and `cider_d@DECODER` (CIDEr-D, x10 as COCO reports it), and `object_f1@DECODER` (micro F1 of
the object names mentioned) when the source has class names; DECODER is `plain` or `collocated`. The
settings hold example captions, and `controller_agreement`: how often the collocated decoder's largest
module weight is the module the test captions' words are tagged with (teacher forcing), in %.

Options: img_size (input size; default the images' own for CNNs), layer (feature map, default -1),
caption_width, caption_reasoning_steps, caption_linguistic_weight, and the decoders' AdamW training
caption_epochs, caption_lr, caption_batch_size, caption_weight_decay, caption_min_steps; seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pretrainlab.backbones.text.tokenizer import WordTokenizer
from pretrainlab.data.captions import image_captions
from pretrainlab.eval.classifier_training import TrainingSettings, fit, seeded
from pretrainlab.eval.image_text import needs_captions
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, applies_when, takes_options
from pretrainlab.eval.protocols.dense import frozen_maps, input_size
from pretrainlab.eval.record import EvalResult
from pretrainlab.language.caption_decoder import DECODERS, CaptionDecoder, DecoderConfig
from pretrainlab.language.module_collocation import NO_TAG, module_tags
from pretrainlab.language.text_metrics import cider_d, corpus_bleu, object_f1, words

HEAD_DEFAULTS = {"epochs": 15, "lr": 3e-3, "batch_size": 128, "weight_decay": 1e-4, "min_steps": 300,
                 "warmup_fraction": 0.05}
MAX_TOKENS = 64


@dataclass
class CaptionInputs:
    """Training examples for `fit`: each draw picks one caption per image; a batch is (cells, ids, tags)."""

    cells: torch.Tensor  # (N, n, C) standardised feature-map cells
    ids: torch.Tensor  # (K, L) every caption, image after image
    tags: torch.Tensor  # (K, L) module tag of every token
    first: torch.Tensor  # (N,) index of each image's first caption
    counts: torch.Tensor  # (N,) captions per image
    device: torch.device

    def __len__(self) -> int:
        return len(self.cells)

    def train_batch(self, indices: np.ndarray, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        rows = torch.from_numpy(indices)
        draws = torch.rand(len(rows), generator=generator, device=generator.device).cpu()
        picks = self.first[rows] + (draws * self.counts[rows]).long().clamp(max=self.counts[rows] - 1)
        return (self.cells[rows].to(self.device), self.ids[picks].to(self.device), self.tags[picks].to(self.device))


def caption_inputs(cells: torch.Tensor, captions: list[list[str]], tokenizer: WordTokenizer,
                   object_names: list[str], device: torch.device) -> CaptionInputs:
    counts = torch.tensor([len(c) for c in captions])
    ids = tokenizer.encode([text for image in captions for text in image])
    first = torch.cumsum(counts, dim=0) - counts
    return CaptionInputs(cells, ids, module_tags(ids, tokenizer, object_names), first, counts, device)


def as_cells(maps: torch.Tensor) -> torch.Tensor:
    return maps.flatten(2).transpose(1, 2).contiguous()  # (N, C, h, w) -> (N, h * w, C)


@torch.no_grad()
def caption_all(decoder: CaptionDecoder, cells: torch.Tensor, device: torch.device, batch_size: int = 256
                ) -> list[str]:
    decoder.eval()
    return [text for start in range(0, len(cells), batch_size)
            for text in decoder.generate(cells[start : start + batch_size].to(device))[0]]


@torch.no_grad()
def controller_agreement(decoder: CaptionDecoder, inputs: CaptionInputs) -> float:
    """% of tagged test tokens whose module gets the controller's largest weight under teacher forcing."""
    decoder.eval()
    rows = torch.repeat_interleave(torch.arange(len(inputs.counts)), inputs.counts)  # (K,) image of each caption
    hits = total = 0
    for start in range(0, len(rows), 256):
        chunk = slice(start, start + 256)
        _, weights = decoder(inputs.cells[rows[chunk]].to(inputs.device), inputs.ids[chunk].to(inputs.device))
        tags = inputs.tags[chunk, 1:].to(inputs.device)
        tagged = tags != NO_TAG
        hits += int((weights.argmax(dim=-1) == tags)[tagged].sum())
        total += int(tagged.sum())
    return 100 * hits / max(total, 1)


def decoder_config(options: dict[str, Any], kind: str) -> DecoderConfig:
    return DecoderConfig(kind=kind, width=int(options.get("caption_width", DecoderConfig.width)),
                         reasoning_steps=int(options.get("caption_reasoning_steps", DecoderConfig.reasoning_steps)),
                         linguistic_weight=float(options.get("caption_linguistic_weight",
                                                             DecoderConfig.linguistic_weight)))


@PROTOCOLS.register("captioning")
@applies_when(needs_captions)
@takes_options("img_size", "layer", "caption_width", "caption_reasoning_steps", "caption_linguistic_weight",
               *TrainingSettings.option_names("caption_"))
def captioning_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    options, source = context.options, context.source
    seed = int(options.get("seed", 0))
    settings = TrainingSettings.from_options(options, prefix="caption_", **HEAD_DEFAULTS)
    configs = {kind: decoder_config(options, kind) for kind in DECODERS}  # bad values fail before any work
    train_captions, test_captions = image_captions(source.train), image_captions(source.test)
    longest = max(len(words(text)) for image in train_captions for text in image)
    tokenizer = WordTokenizer.build([t for image in train_captions for t in image], min(longest + 2, MAX_TOKENS))
    names = list(source.classes or [])
    train_maps, test_maps = frozen_maps(context, int(options.get("layer", -1)), input_size(context))
    train_cells, test_cells = as_cells(train_maps), as_cells(test_maps)
    train = caption_inputs(train_cells, train_captions, tokenizer, names, context.device)
    references = [[words(r) for r in refs] for refs in test_captions]
    values: list[tuple[str, float]] = []
    details: dict[str, Any] = {**context.base_settings(), "seed": seed, "input_size": input_size(context),
                               "cells": train_cells.shape[1], "channels": train_cells.shape[2],
                               "vocabulary": tokenizer.vocab_size, "epochs": settings.epochs, "lr": settings.lr,
                               "batch_size": settings.batch_size, "decoding": "greedy"}
    for kind, config in configs.items():
        with seeded(seed, context.device):
            decoder = CaptionDecoder(tokenizer, train_cells.shape[2], train_cells.shape[1], config)
        losses = fit(decoder, train, lambda model, batch, _: model.loss(*batch), settings, context.device, seed)
        generated = caption_all(decoder, test_cells, context.device)
        hypotheses = [words(g) for g in generated]
        values += [(f"bleu4@{kind}", corpus_bleu(hypotheses, references)),
                   (f"cider_d@{kind}", cider_d(hypotheses, references))]
        if names:
            values.append((f"object_f1@{kind}", object_f1(generated, test_captions, names)))
        details[kind] = {"width": config.width, "final_train_loss": round(losses[-1], 5),
                         "parameters": sum(p.numel() for p in decoder.parameters()),
                         "examples": [{"generated": g, "reference": refs[0]}
                                      for g, refs in zip(generated[:4], test_captions[:4], strict=True)]}
        if kind == "collocated":
            test = caption_inputs(test_cells, test_captions, tokenizer, names, context.device)
            details[kind].update(reasoning_steps=config.reasoning_steps, linguistic_weight=config.linguistic_weight,
                                 controller_agreement=round(controller_agreement(decoder, test), 2))
    seconds = time.perf_counter() - started
    return [EvalResult("captioning", source.spec, metric, value, seconds, settings=details,
                       backbone=context.target.label) for metric, value in values]
