"""Masked token optimisation's claim, measured: fewer epochs to the same accuracy.

MTO ("Emerging Property of Masked Token for Effective Pre-training", arXiv 2404.08330) reports reaching
its baselines' converged accuracy in about half the pre-training epochs. This pre-trains MAE with and
without MTO on the methods-table budget (the fixed 10,000-image Fashion-MNIST subset, batch 256, the
MAE recipe with a 1-epoch warm-up, vit_nano_patch4) with the online kNN monitor after every epoch
(TrainConfig.knn_every=1: cosine kNN on the subset's features, scored on the 10,000 test images), and
reports how many epochs each needs to reach targets set by the plain run's final accuracy.
`--method simmim` measures the same on SimMIM (MTO in its encoder, the SimMIM recipe); `--train-images`,
`--test-images`, `--epochs` and `--batch-size` shrink the budget (stratified subsets, seed 0).

    python bench/mto_epochs.py --seeds 0 --mto 0.5     # run both arms for each seed (rows in bench/results/mto/)
    python bench/mto_epochs.py --method simmim --seeds 0 --mto 0.5 --train-images 2000 --test-images 2000 \
        --epochs 4 --batch-size 64
    python bench/mto_epochs.py --render                # write docs/mto.md from the stored rows
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import methods_table  # noqa: E402  (it puts the checkout on sys.path, for `bench.` below)
from methods_table import BATCH_SIZE, EPOCHS, ROOT, TRAIN_IMAGES, VIT_BACKBONE, load_data  # noqa: E402

from bench.common import replace_block  # noqa: E402
from pretrainlab.backbones import create_backbone  # noqa: E402
from pretrainlab.data.source import ImageSource  # noqa: E402
from pretrainlab.data.splits import stratified_indices  # noqa: E402
from pretrainlab.pipeline import build_run_config, knn_monitor, method_context, pretrain  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "mto"
DOC = ROOT / "docs" / "mto.md"
TARGET_SHARES = (0.98, 1.0)  # targets: these shares of the plain run's final kNN accuracy


def knn_curve(run_dir: Path) -> tuple[list[float], int]:
    """kNN top-1 after each epoch (index 0 = epoch 1) from the run's metrics.jsonl, and the k used."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    monitored = sorted((r["epoch"], r["knn_top1"], r["knn_k"]) for r in records if "knn_top1" in r)
    return [accuracy for _, accuracy, _ in monitored], int(monitored[-1][2])


NAMES = {"mae": "MAE", "simmim": "SimMIM"}


def row_name(method: str, label: str, seed: int) -> str:
    """MAE's rows keep their first names (plain-seed0); other methods' rows carry the method."""
    return f"{label}-seed{seed}" if method == "mae" else f"{method}-{label}-seed{seed}"


def shrink(subset: ImageSource, train_images: int, test_images: int) -> ImageSource:
    """Stratified subsets (seed 0) of the fixed pre-training subset and of the test split (the kNN monitor's)."""
    def part(images, count):  # noqa: ANN001, ANN202
        if count >= len(images):
            return images
        return images.subset(stratified_indices(images.labels, 1 - count / len(images), seed=0)[0])

    train, test = part(subset.train, train_images), part(subset.test, test_images)
    return ImageSource(subset.spec, train, test, subset.classes,
                       split_note=f"stratified {len(train)}-image pre-training subset, {len(test)} test images, seed 0")


def run_arm(method: str, label: str, options: dict, subset: ImageSource, epochs: int, seed: int,
            batch_size: int = BATCH_SIZE) -> dict:
    out = ROOT / "runs" / "bench-mto" / row_name(method, label, seed)
    if out.exists():
        shutil.rmtree(out)
    config = build_run_config(
        method, {"backbone": VIT_BACKBONE, "data": subset.spec, "out": str(out)},
        {"epochs": epochs, "batch_size": batch_size, "warmup_epochs": 1.0, "knn_every": 1, "seed": seed}, options,
    )
    started = time.perf_counter()
    summary = pretrain(config, source=subset, show_progress=False)
    curve, k = knn_curve(out)
    init = {"knn_at_init": knn_at_init(subset, seed)} if label == "plain" else {}
    return {**init, "method": method, "arm": label, "options": options, "seed": seed, "epochs": epochs,
            "train_images": len(subset.train), "test_images": len(subset.test), "batch_size": batch_size,
            "knn_by_epoch": curve, "knn_k": k, "final_loss": summary["final_loss"],
            "seconds_with_monitor": time.perf_counter() - started, "measured": time.strftime("%Y-%m-%d %H:%M")}


def knn_at_init(subset: ImageSource, seed: int) -> float:
    """The monitor's kNN top-1 of the backbone both arms start from (pretrain seeds it the same way)."""
    context = method_context(subset, subset.image_size[0])
    torch.manual_seed(seed)
    backbone = create_backbone(VIT_BACKBONE, context.img_size, subset.channels)
    return knn_monitor(subset, context, torch.device("cpu"))(backbone, 0)["knn_top1"]


def epochs_to(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose accuracy reaches `target`, None when none does."""
    return next((epoch for epoch, accuracy in enumerate(curve, start=1) if accuracy >= target - 1e-9), None)


def render() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    lines = []
    for method in NAMES:
        lines += render_method(method, [r for r in rows if r.get("method", "mae") == method])
    text = DOC.read_text() if DOC.exists() else "# Masked token optimisation\n\n<!-- results -->\n<!-- /results -->\n"
    header = (f"Fashion-MNIST (`../shared/data/fashion_mnist.npz`), {VIT_BACKBONE}, a fixed stratified subset (seed 0) "
              f"of the training split, each method's recipe with a 1-epoch warm-up, 2 shared CPU cores; online kNN "
              "(cosine, T=0.07) on the subset's features after every epoch, top-1 % on a fixed stratified set of test "
              "images (all 10,000 unless the section says fewer). Produced by `python bench/mto_epochs.py --render`."
              "\n\n")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(replace_block(text, "results", header + "\n".join(lines)))


def render_method(method: str, rows: list[dict]) -> list[str]:
    """The per-epoch table and the epochs-to-target table of each seed with both arms."""
    name, lines = NAMES[method], []
    for seed in sorted({r["seed"] for r in rows}):
        arms = {r["arm"]: r for r in rows if r["seed"] == seed}
        if set(arms) != {"plain", "mto"}:
            continue
        plain, mto = arms["plain"], arms["mto"]
        lines += [f"### {name}, seed {seed} ({plain['train_images']} images, "
                  f"{plain.get('test_images', 10_000)} test images, batch {plain.get('batch_size', BATCH_SIZE)}, "
                  f"MTO options: "
                  f"{json.dumps(mto['options'])}, kNN k={plain['knn_k']})", "",
                  "| epoch | " + " | ".join(str(e) for e in range(0 if "knn_at_init" in plain else 1,
                                                                 plain["epochs"] + 1)) + " |",
                  "| --- |" + " --- |" * (plain["epochs"] + ("knn_at_init" in plain))]
        for arm in (plain, mto):
            start = [plain["knn_at_init"]] if "knn_at_init" in plain else []  # epoch 0: the shared random init
            lines.append(f"| {name}{' + MTO' if arm is mto else ''} | "
                         + " | ".join(f"{a:.2f}" for a in start + arm["knn_by_epoch"]) + " |")
        lines += ["", f"| target kNN top-1 | epochs, {name} | epochs, {name} + MTO |", "| --- | --- | --- |"]
        for share in TARGET_SHARES:
            target = share * plain["knn_by_epoch"][-1]
            found = [epochs_to(arm["knn_by_epoch"], target) for arm in (plain, mto)]
            shown = [str(e) if e is not None else f"not within {arm['epochs']}" for e, arm in zip(found, (plain, mto),
                                                                                                 strict=True)]
            lines.append(f"| {target:.2f} ({share:.0%} of plain {name}'s final) | {shown[0]} | {shown[1]} |")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="", help="comma-separated training seeds to run both arms for")
    parser.add_argument("--mto", type=float, default=0.5, help="MTO loss weight of the MTO arm")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--method", choices=sorted(NAMES), default="mae")
    parser.add_argument("--train-images", type=int, default=TRAIN_IMAGES, help="pre-train on this many (stratified)")
    parser.add_argument("--test-images", type=int, default=10_000, help="score the kNN monitor on this many")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--render", action="store_true", help="write docs/mto.md from the stored rows")
    parser.add_argument("--data", type=Path, default=methods_table.DATA,
                        help="the Fashion-MNIST npz (default ../shared/data/fashion_mnist.npz beside the checkout)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if seeds:
        methods_table.DATA = args.data
        _, subset = load_data()
        subset = shrink(subset, args.train_images, args.test_images)
        RESULTS.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            for label, options in (("plain", {}), ("mto", {"mto": args.mto})):
                row = run_arm(args.method, label, options, subset, args.epochs, seed, args.batch_size)
                (RESULTS / f"{row_name(args.method, label, seed)}.json").write_text(json.dumps(row, indent=2))
                print(json.dumps(row))
    if args.render or seeds:
        render()


if __name__ == "__main__":
    main()
