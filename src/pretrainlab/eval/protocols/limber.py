"""LiMBeR caption probe: how well a frozen LM captions images from a linear map of the frozen features.

Merullo et al., "Linearly Mapping from Image to Text Space", arXiv 2209.15162; the machinery is in
language/ (caption_lm.py: the small LM trained from scratch on the training captions, then frozen and
shared by every backbone; limber.py: the linear map, decoding, metrics).

Metrics on the test split, in percent: `bleu4` (corpus BLEU-4 of the greedy captions against all of each
image's captions) and, when the source has class names, `object_exact_match` (the generated caption
names exactly the objects the references name) and `object_f1` (micro F1 of the named objects against
the references' objects). `blind_bleu4` in the settings is the LM's caption with
no image (its most likely caption, the same for every image): the floor the image must lift.

Options: seed (the map's initial weights and caption draws), prefix_tokens, map_epochs, lm_epochs,
img_size (extract features at this size instead of the run's own).
"""

from __future__ import annotations

import time

from pretrainlab.data.captions import image_captions
from pretrainlab.eval.image_text import features_at_size, needs_captions
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, applies_when, takes_options
from pretrainlab.eval.record import EvalResult
from pretrainlab.language.caption_lm import CaptionLMConfig, cached_caption_lm
from pretrainlab.language.limber import (
    LinearMapConfig,
    caption_quality,
    fit_linear_map,
    generate_captions,
    standardise,
)
from pretrainlab.language.text_metrics import corpus_bleu, words


@PROTOCOLS.register("limber")
@applies_when(needs_captions)
@takes_options("prefix_tokens", "map_epochs", "lm_epochs", "img_size")
def limber_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    options, source = context.options, context.source
    seed = int(options.get("seed", 0))
    lm_config = CaptionLMConfig(prefix_tokens=int(options.get("prefix_tokens", 4)),
                                epochs=int(options.get("lm_epochs", CaptionLMConfig.epochs)))
    map_config = LinearMapConfig(epochs=int(options.get("map_epochs", LinearMapConfig.epochs)))
    train_captions, test_captions = image_captions(source.train), image_captions(source.test)
    lm = cached_caption_lm([text for captions in train_captions for text in captions], lm_config)
    img_size = int(options["img_size"]) if "img_size" in options else None
    train, test = (context.features(split) if img_size is None else
                   features_at_size(context.target, source, split, img_size, context.device)
                   for split in ("train", "test"))
    train, test = standardise(train.float(), test.float())
    mapping = fit_linear_map(train, train_captions, lm, map_config, seed)
    generated = generate_captions(mapping, lm, test, map_config.max_new_tokens)
    scores = caption_quality(generated, test_captions, source.classes)
    blind = lm.generate(None, 1, map_config.max_new_tokens)[0]
    settings = {**context.base_settings(), "seed": seed, "img_size": img_size or context.target.img_size,
                "lm": {"width": lm_config.width, "depth": lm_config.depth, "epochs": lm_config.epochs,
                       "vocabulary": lm.tokenizer.vocab_size, "trained_on": "training captions only"},
                "prefix_tokens": lm_config.prefix_tokens, "map_epochs": map_config.epochs, "decoding": "greedy",
                "blind_caption": blind, "blind_bleu4": round(corpus_bleu([words(blind)] * len(test_captions),
                                                                          [[words(r) for r in refs]
                                                                           for refs in test_captions]), 3),
                "examples": [{"generated": g, "reference": refs[0]} for g, refs in
                             zip(generated[:5], test_captions[:5], strict=True)]}
    seconds = time.perf_counter() - started
    return [EvalResult("limber", source.spec, metric, value, seconds, settings=settings,
                       backbone=context.target.label) for metric, value in scores.items()]
