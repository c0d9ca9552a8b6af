"""CLIP learns: a short run on synthetic captions of composed canvases beats its own random init on
zero-shot classification (multi-label mAP on the held-out canvases) and image-text retrieval."""

from __future__ import annotations

from pathlib import Path

from pretrainlab.data import load_source
from pretrainlab.pipeline import build_run_config, evaluate_backbone, pretrain, untrained_run


def test_short_clip_run_beats_random_init_on_zero_shot(tmp_path: Path) -> None:
    source = load_source("captions:composed:builtin:800")
    options = {"text_pooling": "mean", "text_width": 32, "text_depth": 1, "text_heads": 2, "embed_dim": 32}
    train = {"epochs": 8, "batch_size": 64, "lr": 4e-3, "warmup_epochs": 1, "seed": 0, "log_every": 100}
    config = build_run_config("clip", {"backbone": "tinycnn", "data": source.spec, "img_size": 28,
                                       "out": str(tmp_path / "clip")}, train, options)
    pretrain(config, show_progress=False, source=source)
    random_run = untrained_run(build_run_config("clip", {"backbone": "tinycnn", "data": source.spec, "img_size": 28,
                                                         "out": str(tmp_path / "random")}, train, options), source)
    for name in ("backbone.safetensors", "text_tower.safetensors", "tokenizer.json"):
        assert (tmp_path / "clip" / name).is_file() and (random_run / name).is_file()

    def scores(run: Path) -> dict[str, float]:
        results = evaluate_backbone(str(run), source.spec, ["zero_shot", "image_text_retrieval"], img_size=28,
                                    source=source)
        return {result.metric: result.value for result in results}

    trained, untrained = scores(tmp_path / "clip"), scores(random_run)
    assert trained["mAP"] >= untrained["mAP"] + 8, (trained, untrained)
    assert trained["rsum"] >= untrained["rsum"] + 30, (trained, untrained)
