"""Learning on a standard backbone: SimCLR's packaged recipe, no flags, makes timm's resnet18 better than its own
random init on `builtin` (issue 9: the recipe before it ended below the random resnet18).

The bar is the monitor's epoch 0, the very weights the run starts from, evaluated like the trained ones (online
kNN, k=20, eval-mode pooled features of whole images): 91.0 %. With the recipe (lr 0.6 per 256, a 100-step
warm-up, crops of at least 20 px a side, no flips on digits) 12 epochs of 128 end at 94.2 % on this machine
(bench/resnet_recipes.py, variant lr0.6-min100steps-crop0.5-12ep: 86.3 / 91.7 / 93.1 / 93.1 / 94.3 / 94.2 every
2 epochs); the test asks for 2 points of the 3.2, leaving room for other CPUs' arithmetic. About 3 minutes on
2 cores: the suite's longest test, kept because the short tinycnn demo cannot show what the issue was about.
"""

from __future__ import annotations

import json
from pathlib import Path

from pretrainlab.pipeline import build_run_config, pretrain


def test_simclr_recipe_makes_resnet18_beat_its_random_init_on_builtin(tmp_path: Path, builtin_source) -> None:
    config = build_run_config("simclr", {"backbone": "resnet18", "data": "builtin", "img_size": 32,
                                         "out": str(tmp_path / "run")},
                              {"epochs": 12, "batch_size": 128, "knn_every": 12, "seed": 0}, {})
    pretrain(config, show_progress=False, source=builtin_source)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    curve = {r["epoch"]: r["knn_top1"] for r in records if "knn_top1" in r}
    assert sorted(curve) == [0, 12]
    assert curve[12] >= curve[0] + 2, curve
