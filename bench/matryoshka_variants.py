"""Matryoshka variants at the methods table's budget, measured at every trained size.

Each variant pre-trains `matryoshka` (SimCLR base) over the same stratified 10,000 Fashion-MNIST images,
10 epochs of 256, as bench/methods_table.py, into runs/matryoshka-VARIANT, then measures kNN (T=0.07) at
every trained size through `RUN@dimD` / `RUN@layerL,dimD` targets, and kNN + linear probe of the full
embedding:

    python bench/matryoshka_variants.py vit2d   # depth x width on vit_nano_patch4, with Starbucks' SMAE
    python bench/matryoshka_variants.py sum     # tinycnn, the paper's plain sum of pair losses (weights 1)

Rows go to bench/results/head_layers/matryoshka-VARIANT.json. The recipe's own variant (weights 1 / pairs)
is the `matryoshka` row of the methods table; bench/head_layers.py --dims measures its sizes.
Zhuang et al., "Starbucks: Improved Training for 2D Matryoshka Embeddings", arXiv 2410.13230.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from head_layers import RESULTS, measure_run  # noqa: E402
from methods_table import BATCH_SIZE, CNN_BACKBONE, EPOCHS, ROOT, VIT_BACKBONE, load_data  # noqa: E402

from pretrainlab.pipeline import build_run_config, pretrain  # noqa: E402

VARIANTS = {
    "vit2d": {"backbone": VIT_BACKBONE, "options": {"pairs": [[1, 32], [2, 64], [4, 128]], "masked_weight": 1.0},
              "sizes": ["layer1,dim32", "layer2,dim64"]},
    "sum": {"backbone": CNN_BACKBONE, "options": {"weights": [1.0, 1.0, 1.0, 1.0]},
            "sizes": ["dim16", "dim32", "dim64"]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=sorted(VARIANTS))
    name = parser.parse_args().variant
    variant = VARIANTS[name]
    full, subset = load_data()
    out = ROOT / "runs" / f"matryoshka-{name}"
    if out.exists():
        shutil.rmtree(out)
    config = build_run_config("matryoshka", {"backbone": variant["backbone"], "data": full.spec, "out": str(out)},
                              {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "warmup_epochs": 1.0, "knn_every": 0},
                              variant["options"])
    started = time.perf_counter()
    summary = pretrain(config, source=subset, show_progress=False)
    seconds_per_epoch = (time.perf_counter() - started) / EPOCHS
    rows = measure_run(out, variant["sizes"], full, ["knn"])
    rows += measure_run(out, ["backbone"], full, ["knn", "linear"])  # the full embedding (largest pair)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    for row in rows:
        row.update({"backbone": variant["backbone"], "epochs": EPOCHS, "options": variant["options"],
                    "seconds_per_epoch": seconds_per_epoch, "final_loss": summary["final_loss"], "measured": stamp})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"matryoshka-{name}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
