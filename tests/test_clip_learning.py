"""CLIP learns: a short run on synthetic captions of composed canvases beats its own random init on
zero-shot classification (multi-label mAP on the held-out canvases), image-text retrieval, the DenseCLIP
probe (zero-shot score maps and the trained probe) and the answer grounding probe."""

from __future__ import annotations

from pathlib import Path

from pretrainlab.data import load_source
from pretrainlab.pipeline import build_run_config, evaluate_backbone, pretrain, untrained_run

# The DenseCLIP probe at the run's own scale (28 px canvases), its heads trained briefly.
DENSE_OPTIONS = {"img_size": 28, "dense_epochs": 1, "dense_min_steps": 20, "grounding_epochs": 1,
                 "grounding_min_steps": 150}


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
        results = evaluate_backbone(str(run), source.spec, ["zero_shot", "image_text_retrieval", "denseclip",
                                                                  "answer_grounding"],
                                    img_size=28, source=source, options=DENSE_OPTIONS)
        return {result.metric: result.value for result in results}

    trained, untrained = scores(tmp_path / "clip"), scores(random_run)
    assert trained["mAP"] >= untrained["mAP"] + 8, (trained, untrained)
    assert trained["rsum"] >= untrained["rsum"] + 30, (trained, untrained)
    # DenseCLIP: the pixel-text score maps alone (zero-shot) and the probe beat the random towers' (measured
    # at this seed: 8.6 vs 7.2 and 16.0 vs 12.7 mIoU; the study's 20-epoch run reaches far more zero-shot).
    assert trained["zero_shot_mIoU"] >= untrained["zero_shot_mIoU"] + 1, (trained, untrained)
    assert trained["mIoU"] >= untrained["mIoU"] + 2, (trained, untrained)
    # Answer grounding with Sentence Attention Blocks on the frozen maps (measured: IoU 20.4 vs 19.2 on main after
    # the scale/resnet/claims merges changed training details; 22.1 vs 19.2 before): a small but real gain.
    assert trained["IoU"] >= untrained["IoU"] + 1, (trained, untrained)
