"""UNITER's pieces against naive references: the IPOT distance against an exact linear-programming OT, the
WRA sign, MLM masking (only words, BERT's proportions), ITM labels and partners; the image-text matching
protocol's pairs and its refusal of a backbone without a text side; bad input exits 2 with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from pretrainlab.backbones.text.tokenizer import BOS, EOS, PAD, SPECIALS, WordTokenizer
from pretrainlab.backbones.text.word_masks import IGNORE, mask_words
from pretrainlab.cli import main
from pretrainlab.eval.protocols.image_text_matching import swapped_pairs
from pretrainlab.losses.optimal_transport import (
    cosine_cost,
    ipot_plan,
    ot_distance,
    word_region_alignment_loss,
)
from pretrainlab.methods.uniter import matching_labels, negative_partners


def exact_ot(cost: np.ndarray) -> float:
    """The exact OT distance with uniform marginals, by linear programming over the plan's N x M entries."""
    rows, columns = cost.shape
    equalities = []
    for i in range(rows):  # row i of the plan sums to 1 / rows
        equalities.append(np.kron(np.eye(rows)[i], np.ones(columns)))
    for j in range(columns):  # column j sums to 1 / columns
        equalities.append(np.kron(np.ones(rows), np.eye(columns)[j]))
    targets = [1 / rows] * rows + [1 / columns] * columns
    result = linprog(cost.ravel(), A_eq=np.array(equalities), b_eq=targets, bounds=(0, None), method="highs")
    return float(result.fun)


def all_valid(batch: int, count: int) -> torch.Tensor:
    return torch.ones(batch, count, dtype=torch.bool)


def test_ipot_distance_matches_exact_ot_on_a_3x4_cost() -> None:
    cost = torch.rand(1, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    distance = ot_distance(cost, all_valid(1, 3), all_valid(1, 4), beta=0.1, iterations=300)
    assert float(distance) == pytest.approx(exact_ot(cost[0].numpy()), abs=1e-4)
    plan = ipot_plan(cost, all_valid(1, 3), all_valid(1, 4), beta=0.1, iterations=300)[0]
    assert torch.allclose(plan.sum(dim=1), torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(plan.sum(dim=0), torch.full((4,), 1 / 4, dtype=torch.float64), atol=1e-6)


def test_ipot_hand_checkable_cases() -> None:
    swap = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # the anti-diagonal plan costs nothing
    assert float(ot_distance(swap, all_valid(1, 2), all_valid(1, 2), iterations=200)) == pytest.approx(0, abs=1e-4)
    crossed = torch.tensor([[[0.0, 2.0], [2.0, 0.0]]])  # half the mass on each zero
    plan = ipot_plan(crossed, all_valid(1, 2), all_valid(1, 2), iterations=200)[0]
    assert torch.allclose(plan, torch.tensor([[0.5, 0.0], [0.0, 0.5]]), atol=1e-4)
    constant = torch.full((1, 3, 5), 0.7)  # every plan costs 0.7
    assert float(ot_distance(constant, all_valid(1, 3), all_valid(1, 5))) == pytest.approx(0.7, abs=1e-5)


def test_padding_gives_the_unpadded_distance_and_gradient_is_the_plan() -> None:
    cost = torch.rand(1, 3, 4, generator=torch.Generator().manual_seed(1))
    padded = torch.full((1, 5, 6), 9.0)
    padded[0, :3, :4] = cost[0]
    rows, columns = torch.zeros(1, 5, dtype=torch.bool), torch.zeros(1, 6, dtype=torch.bool)
    rows[0, :3], columns[0, :4] = True, True
    assert torch.allclose(ot_distance(padded, rows, columns), ot_distance(cost, all_valid(1, 3), all_valid(1, 4)),
                          atol=1e-6)
    cost.requires_grad_(True)
    ot_distance(cost, all_valid(1, 3), all_valid(1, 4)).sum().backward()
    assert torch.allclose(cost.grad, ipot_plan(cost.detach(), all_valid(1, 3), all_valid(1, 4)))


def test_cosine_cost_and_wra_sign() -> None:
    rows, columns = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    cost = cosine_cost(rows, columns)
    naive = torch.stack([torch.stack([torch.stack([1 - torch.cosine_similarity(rows[b, i], columns[b, j], dim=0)
                                                   for j in range(4)]) for i in range(3)]) for b in range(2)])
    assert torch.allclose(cost, naive, atol=1e-6)
    distance = torch.tensor([0.2, 0.5, 0.9])
    loss = word_region_alignment_loss(distance, torch.tensor([True, False, True]))
    assert float(loss) == pytest.approx((0.2 - 0.5 + 0.9) / 3)


def test_masking_chooses_only_words_in_berts_proportions() -> None:
    vocab_size, mask_id = 40, 40
    generator = torch.Generator().manual_seed(0)
    body = torch.randint(len(SPECIALS), vocab_size, (2000, 12), generator=generator)
    ids = torch.cat([torch.full((2000, 1), BOS), body, torch.full((2000, 1), EOS), torch.full((2000, 3), PAD)], 1)
    masked, targets = mask_words(ids, mask_id, vocab_size, generator)
    chosen = targets != IGNORE
    assert not chosen[ids < len(SPECIALS)].any(), "a special token was chosen"
    assert torch.equal(masked[ids < len(SPECIALS)], ids[ids < len(SPECIALS)]), "a special token was changed"
    assert torch.equal(targets[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    assert 0.14 < float(chosen[:, 1:13].float().mean()) < 0.17  # 15 % plus the forced one of word-less draws
    became_mask = float((masked[chosen] == mask_id).float().mean())
    kept = float((masked[chosen] == ids[chosen]).float().mean())
    assert 0.77 < became_mask < 0.83 and 0.08 < kept < 0.13  # 80 % [MASK]; 10 % kept (+ random draws of itself)
    assert chosen.any(dim=1).all(), "every caption predicts at least one word"


def test_itm_partners_and_labels() -> None:
    partners = negative_partners(5, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert not torch.any(partners == torch.arange(5)) and sorted(partners.tolist()) == list(range(5))
    texts = ["a 1", "a 2", "a 1", "a 3"]
    labels = matching_labels(texts, torch.tensor([2, 3, 0, 1]))  # 0 <-> 2 share the text "a 1"
    assert labels.tolist() == [1, 1, 1, 1, 1, 0, 1, 0]


def test_swapped_pairs_never_pair_an_image_with_an_identical_caption() -> None:
    per_image = [["a 1", "one object"], ["a 2", "one object"], ["a 3", "one object"]]
    images, positives, negatives = swapped_pairs(per_image, np.random.default_rng(0))
    assert len(positives) == 3 and all(p != n for p, n in zip(positives, negatives, strict=True))
    assert [per_image[i][0] for i in images.tolist()] == positives


def test_word_tokenizer_has_room_for_the_mask_token() -> None:
    from pretrainlab.backbones.text.cross_modal import CrossModalModel

    model = CrossModalModel(WordTokenizer.build(["a 1 above a 2"], 8), image_channels=4, width=8, heads=2, depth=1)
    ids = torch.tensor([[BOS, model.mask_id, EOS]])
    _, regions, words = model(model.embed_regions(torch.randn(1, 4, 3, 3)), ids)
    assert regions.shape == (1, 9, 8) and words.shape == (1, 3, 8)


@pytest.mark.parametrize("argv, message", [
    (["pretrain", "--method", "uniter", "--data", "builtin", "--backbone", "tinycnn", "--epochs", "1"],
     "method 'uniter' trains on image-caption pairs"),
    (["eval", "timm:tinycnn", "--data", "captions:composed:builtin:40", "--protocol", "image_text_matching",
      "--img-size", "28"], "needs an image-text run"),
    (["eval", "timm:tinycnn", "--data", "builtin", "--protocol", "image_text_matching", "--img-size", "28"],
     "needs captions"),
])
def test_bad_input_is_one_line_exit_2(argv: list[str], message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = main([*argv, *(["--out", str(tmp_path / "run")] if argv[0] == "pretrain" else [])])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_a_uniter_run_is_scored_by_its_itm_head(tmp_path: Path) -> None:
    from pretrainlab.backbones.text.cross_modal import CROSS_MODAL_FILE, load_cross_modal
    from pretrainlab.data import load_source
    from pretrainlab.pipeline import build_run_config, evaluate_backbone, pretrain

    source = load_source("captions:composed:builtin:40")
    train = {"epochs": 1, "batch_size": 16, "seed": 0, "log_every": 100}
    options = {"width": 16, "depth": 1, "heads": 2, "ot_iterations": 5}
    config = build_run_config("uniter", {"backbone": "tinycnn", "data": source.spec, "img_size": 28,
                                         "out": str(tmp_path / "run")}, train, options)
    pretrain(config, show_progress=False, source=source)
    model = load_cross_modal(tmp_path / "run" / CROSS_MODAL_FILE)
    assert model.options["width"] == 16 and model.tokenizer.vocab_size > len(SPECIALS)
    results = evaluate_backbone(str(tmp_path / "run"), source.spec, ["image_text_matching"], img_size=28,
                                source=source, options={"images": 4})
    scores = {result.metric: result.value for result in results}
    assert 0 <= scores["itm_accuracy"] <= 100 and 0 <= scores["itm_pairwise_accuracy"] <= 100
    assert scores["t2i_recall@5"] == 100  # 4 images: every caption finds its own among the top 5
    assert results[0].settings["retrieval_images"] == 4 and "cross-encoder" in results[0].settings["score"]
