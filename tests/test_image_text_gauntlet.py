"""Zero-shot and image-text retrieval in the gauntlet and the store: chosen automatically on a caption source,
stored per seed, ranked by compare, and skipped (with the reason) for a backbone without a text tower."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pretrainlab.data import load_source
from pretrainlab.eval.gauntlet import GauntletPlan, plan_protocols, run_gauntlet
from pretrainlab.eval.protocols import EvalContext
from pretrainlab.pipeline import build_run_config, gauntlet, seeded_target, untrained_run
from pretrainlab.report import compare_store
from pretrainlab.store import ResultsStore

DATA = "captions:composed:builtin:24"
IMAGE_TEXT = ["zero_shot", "image_text_retrieval"]


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = load_source(DATA)
    config = build_run_config("clip", {"backbone": "tinycnn", "data": DATA, "img_size": 28,
                                       "out": str(tmp_path_factory.mktemp("runs") / "clip")},
                              {"seed": 0}, {"text_width": 16, "text_depth": 1, "embed_dim": 8})
    return untrained_run(config, source)


def test_caption_source_plans_the_image_text_protocols() -> None:
    plan = plan_protocols(load_source(DATA))
    assert set(IMAGE_TEXT) <= set(plan.protocols)
    assert "image_text_retrieval" in plan_protocols(load_source("composed:builtin:24")).skipped


def test_gauntlet_stores_image_text_results_and_compare_ranks_them(clip_run: Path, tmp_path: Path) -> None:
    store = tmp_path / "results.db"
    outcome = gauntlet(str(clip_run), DATA, IMAGE_TEXT, seeds=2, store=store, img_size=28)
    assert not outcome.failed and not outcome.skipped
    rows = ResultsStore(store).evaluations(DATA)
    stored = {(row.protocol, row.metric, row.seed) for row in rows}
    for seed in (0, 1):
        assert ("zero_shot", "mAP", seed) in stored and ("image_text_retrieval", "rsum", seed) in stored
        assert {("image_text_retrieval", f"{d}_recall@{k}", seed) for d in ("i2t", "t2i") for k in (1, 5, 10)} <= stored
    assert all(0 <= row.value <= 100 for row in rows if row.metric != "rsum")
    comparison = compare_store(ResultsStore(store), data=DATA)[0]
    assert comparison.backbones and (comparison.backbones[0], "zero_shot", "mAP") in comparison.cells


def test_automatic_suite_skips_image_text_protocols_without_a_text_tower() -> None:
    source = load_source(DATA)
    context = EvalContext(seeded_target("timm:tinycnn", 28, source.channels), source, torch.device("cpu"), {})
    outcome = run_gauntlet(context, GauntletPlan(list(IMAGE_TEXT)), [0])
    assert not outcome.per_seed and set(outcome.skipped) == set(IMAGE_TEXT)
    assert all("text tower" in reason for reason in outcome.skipped.values())
