"""Captioning probe (CNM, arXiv 1904.08608): word module tags, the collocated modules and controller, the
decoders, bad input, and that the probe on a briefly trained backbone beats a random one at a fixed seed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pretrainlab.backbones.text.tokenizer import WordTokenizer
from pretrainlab.cli import main
from pretrainlab.data import load_source
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval import EvalContext, load_target
from pretrainlab.eval.protocols import evaluate
from pretrainlab.language.caption_decoder import CaptionDecoder, DecoderConfig
from pretrainlab.language.module_collocation import (
    ATTRIBUTE,
    FUNCTION,
    NO_TAG,
    OBJECT,
    RELATION,
    CollocatedModules,
    linguistic_loss,
    module_tags,
)
from tests.brief_training import train_supervised
from tests.protocol_data import small_source

CAPTIONS = ["a 3 left of a 7", "a 3 at the top left", "two objects: a 3 and an ankle boot"]
NAMES = [*map(str, range(10)), "Ankle boot"]


def test_module_tags_follow_the_words_roles() -> None:
    tokenizer = WordTokenizer.build(CAPTIONS, 12)
    tags = module_tags(tokenizer.encode(CAPTIONS), tokenizer, NAMES)
    # BOS is never predicted; EOS ends a caption like a function word; padding is ignored
    A, O, R, F_, N = ATTRIBUTE, OBJECT, RELATION, FUNCTION, NO_TAG
    assert tags[0].tolist() == [N, F_, O, R, R, F_, O, F_, N, N, N, N]  # "left" of "left of" relates
    assert tags[1].tolist() == [N, F_, O, F_, F_, A, A, F_, N, N, N, N]  # "top left" is where: an attribute
    assert tags[2].tolist() == [N, A, F_, F_, F_, O, F_, F_, O, O, F_, N]  # "ankle boot": both words name it


def test_controller_weighs_four_modules_and_the_linguistic_loss_trains_it() -> None:
    torch.manual_seed(0)
    modules = CollocatedModules(channels=8, width=16, reasoning_steps=2)
    cells, state = torch.randn(5, 9, 8), torch.randn(5, 16)
    fused, weights = modules(modules.prepare(cells), state)
    assert fused.shape == (5, 16) and weights.shape == (5, 4)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))
    # the function module reads no image: with the controller forced onto it, the cells do not matter
    with torch.no_grad():
        modules.controller.weight.zero_()
        modules.controller.bias.copy_(torch.tensor([-30.0, -30.0, -30.0, 30.0]))
    one = modules(modules.prepare(cells), state)[0]
    other = modules(modules.prepare(torch.randn(5, 9, 8)), state)[0]
    torch.testing.assert_close(one, other, atol=1e-5, rtol=0)
    # CNM's linguistic loss: cross-entropy of the weights against the words' modules, NO_TAG ignored
    weights = torch.tensor([[[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]]])
    expected = -(torch.tensor(0.7).log() + torch.tensor(0.25).log()) / 2
    torch.testing.assert_close(linguistic_loss(weights, torch.tensor([[OBJECT, RELATION]])), expected)
    torch.testing.assert_close(linguistic_loss(torch.cat([weights, weights], 1),
                                               torch.tensor([[OBJECT, RELATION, NO_TAG, NO_TAG]])), expected)


def test_decoders_fit_captions_that_the_cells_determine() -> None:
    """One digit per image, its identity in the features of one cell: both decoders learn to name it."""
    generator = torch.Generator().manual_seed(0)
    digits = torch.randint(0, 4, (256,), generator=generator)
    cells = 0.1 * torch.randn(256, 4, 6, generator=generator)
    cells[torch.arange(256), digits % 4, :4] += 2 * F.one_hot(digits, 4).float()  # digit d sits in cell d
    captions = [f"a {d} at cell {d}" for d in digits.tolist()]
    tokenizer = WordTokenizer.build(captions, 8)
    ids = tokenizer.encode(captions)
    tags = module_tags(ids, tokenizer, NAMES)
    for kind in ("plain", "collocated"):
        torch.manual_seed(0)
        decoder = CaptionDecoder(tokenizer, 6, 4, DecoderConfig(kind=kind, width=32, embed_dim=16))
        optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
        for step in range(80):
            rows = torch.arange(step % 4 * 64, step % 4 * 64 + 64)
            loss = decoder.loss(cells[rows], ids[rows], tags[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        decoder.eval()
        generated, weights = decoder.generate(cells[:32])
        assert generated == captions[:32], kind
        assert (weights is None) == (kind == "plain")


def test_probe_on_a_briefly_trained_backbone_beats_a_random_one() -> None:
    """Single digits captioned by class-name templates ("a photo of a 3."): short captions keep the decoders'
    training to a few seconds, and naming the digit needs the features. (The canvases' 25-word captions
    need a few hundred decoder steps: the study in docs/vision_language.md measures those.)"""
    full = load_source("captions:builtin")
    source = small_source(full, train_per_class=40, test_per_class=10)
    options = {"caption_epochs": 1, "caption_min_steps": 100, "caption_batch_size": 32, "caption_width": 32,
               "caption_lr": 1e-2}
    scores = {}
    for name in ("random", "trained"):
        target = load_target("timm:tinycnn", 28, 1)
        if name == "trained":
            train_supervised(target.backbone, full)
        results = evaluate(EvalContext(target, source, torch.device("cpu"), dict(options)), "captioning")
        scores[name] = {result.metric: result.value for result in results}
    # measured at this seed: CIDEr-D 4.08 vs 2.35 (plain), 4.73 vs 2.55 (collocated); object F1 57 vs 33, 67 vs 35
    for kind in ("plain", "collocated"):
        assert scores["trained"][f"cider_d@{kind}"] > scores["random"][f"cider_d@{kind}"] + 1, scores
        assert scores["trained"][f"object_f1@{kind}"] > scores["random"][f"object_f1@{kind}"] + 15, scores


def test_bad_input_stops_with_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "timm:tinycnn", "--data", "builtin", "--protocol", "captioning", "--no-store"]) == 2
    error = capsys.readouterr().err.strip()
    assert "needs captions" in error and "captions:" in error and "\n" not in error
    for option in ("caption_reasoning_steps=0", "caption_widht=8"):
        assert main(["eval", "timm:tinycnn", "--data", "captions:composed:builtin:24", "--protocol", "captioning",
                     "--option", option, "--no-store"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error:") and "\n" not in error
    with pytest.raises(PretrainlabError, match="unknown caption decoder"):
        DecoderConfig(kind="transformer")
