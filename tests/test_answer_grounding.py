"""Answer grounding: generated questions and answer regions on a hand-made canvas, IoU on a hand-counted case,
the Sentence Attention Block, and the protocol end to end with its one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pretrainlab.cli import main
from pretrainlab.data import load_source
from pretrainlab.data.grounding_questions import RELATION, WHERE, answer_masks, canvas_questions
from pretrainlab.language.answer_grounding import QuestionEncoder, SentenceAttentionBlock, mask_iou
from pretrainlab.pipeline import evaluate_backbone

NAMES = [str(d) for d in range(10)]


def test_questions_and_answer_regions_on_a_hand_made_canvas() -> None:
    cells = np.array([4, 0, 8, 4])  # a 3 top left, a 7 bottom left, another 3 bottom right
    questions = canvas_questions(0, cells, NAMES, np.random.default_rng(0), per_kind=10)
    texts = {q.text: q for q in questions}
    assert {q.text for q in questions if q.kind == WHERE} == {"where is the 3?", "where is the 7?"}
    # "the 3" names two objects: it is never an anchor; the 7 is, with neighbours above (3) and right (3).
    assert {q.text for q in questions if q.kind == RELATION} == {"which digit is above the 7?",
                                                                "which digit is right of the 7?"}
    masks = np.zeros((1, 4, 4), dtype=np.uint8)
    masks[0, 0, 0] = masks[0, 3, 3] = 4  # the two 3s, one pixel each
    masks[0, 2:, 0] = 8  # the 7
    where_three, right_of_seven = answer_masks([texts["where is the 3?"], texts["which digit is right of the 7?"]],
                                               masks)
    assert where_three.sum() == 2 and where_three[0, 0] and where_three[3, 3]
    assert right_of_seven.sum() == 1 and right_of_seven[3, 3]  # only the 3 in the bottom right cell


def test_mask_iou_on_a_hand_counted_case() -> None:
    predicted = torch.zeros(3, 2, 3, dtype=torch.bool)
    truth = torch.zeros(3, 2, 3, dtype=torch.bool)
    predicted[0, 0, :2] = True
    truth[0, 0, 1:] = True  # overlap 1 pixel, union 3
    truth[1, 1, 1] = True  # nothing predicted: 0
    torch.testing.assert_close(mask_iou(predicted, truth), torch.tensor([1 / 3, 0.0, 1.0], dtype=torch.float64))


def test_sentence_attention_block_reweights_channels_by_the_question() -> None:
    torch.manual_seed(0)
    encoder = QuestionEncoder(["where is the 3?", "where is the 7?"], 8)
    block = SentenceAttentionBlock(16, 8)
    maps = torch.randn(2, 16, 5, 5)
    ids, offsets = encoder.token_ids(["where is the 3?", "where is the 7?"])
    sentences = encoder(ids, offsets)
    out = block(maps, sentences)
    assert out.shape == maps.shape
    ratio = out / maps  # one weight in (0, 1) per image and channel, the same at every position
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-5) and (ratio > 0).all()
    same_map = block(maps[:1].expand(2, -1, -1, -1), sentences)
    assert not torch.allclose(same_map[0], same_map[1])  # the question changes which channels pass


def test_answer_grounding_protocol_end_to_end(capsys: pytest.CaptureFixture) -> None:
    source = load_source("composed:builtin:24")
    options = {"img_size": 28, "grounding_min_steps": 10, "grounding_epochs": 1}
    results = {r.metric: r for r in evaluate_backbone("timm:tinycnn", source.spec, ["answer_grounding"],
                                                      options=options, source=source)}
    assert set(results) == {"IoU", "IoU_where", "IoU_relation"}
    assert all(0 <= r.value <= 100 for r in results.values())
    assert results["IoU"].settings["test_questions"] > 0 and 0 < results["IoU"].settings["iou_all_objects"] < 100
    assert main(["eval", "timm:tinycnn", "--data", "builtin", "--protocol", "answer_grounding", "--no-store"]) == 2
    error = capsys.readouterr().err.strip()
    assert "composed canvases" in error and "\n" not in error
