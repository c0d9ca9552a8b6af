"""Renders the three tables of docs/architectures.md from bench/results/{architectures,guidance,compression}/.

The page's prose lives in docs/architectures.md itself; only the text between each pair of markers
(<!-- architectures --> ... <!-- /architectures -->, and likewise guidance and compression) is rewritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import replace_block

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "architectures.md"


def _rows(kind: str) -> list[tuple[str, dict]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted((RESULTS / kind).glob("*.json"))]


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _shared(results: dict[str, dict], backbone: str, kind: str) -> dict:
    """A measurement stored once per architecture (random init, size, speed), whichever row holds it."""
    from bench.architectures_table import ROWS

    return next((row[kind] for key, row in results.items() if ROWS[key][1] == backbone and kind in row), {})


def architecture_table() -> str:
    """One line per row and budget that was pre-trained; an architecture with none gets its random-init line."""
    from bench.architectures_table import EPOCHS, ROWS

    lines = ["| paper | backbone | method | epochs | params (M) | GMACs | train img/s | infer img/s | kNN random | "
             "kNN | linear random | linear |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    results = dict(_rows("architectures"))
    shown: set[str] = set()
    for key, (paper, backbone, method, options) in ROWS.items():
        row = results.get(key, {})
        runs = sorted((value.get("epochs", EPOCHS), value) for kind, value in row.items() if kind.startswith("trained"))
        if not runs and backbone in shown:
            continue
        shown.add(backbone)
        random, speed = _shared(results, backbone, "random"), _shared(results, backbone, "speed")
        size = speed or _shared(results, backbone, "size")
        label = method + ("".join(f", {k}={v}" for k, v in options.items()))
        for epochs, trained in runs or [("-", {})]:
            lines.append(
                f"| {paper} | `{backbone}` | {label if trained else 'none yet'} | {epochs} | "
                f"{_number(size['params'] / 1e6 if size else None, 2)} | {_number(size.get('gmacs'), 3)} | "
                f"{_number(speed.get('train_images_per_s'), 0)} | {_number(speed.get('infer_images_per_s'), 0)} | "
                f"{_number(random.get('knn_top1'))} | {_number(trained.get('knn_top1'))} | "
                f"{_number(random.get('linear_top1'))} | {_number(trained.get('linear_top1'))} |")
    dense = [(key, row["dense"]) for key, row in results.items() if "dense" in row]
    if dense:
        lines += ["", "Dense probe (linear 1x1 head on the last feature map, composed Fashion-MNIST canvases of 56 px, "
                  f"{dense[0][1]['canvases']} training / {dense[0][1]['canvases'] // 4} test canvases):", "",
                  "| backbone | SimCLR epochs | mIoU random | mIoU SimCLR | pixel acc. random | pixel acc. SimCLR |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for _, values in dense:
            lines.append(f"| `{values['backbone']}` | {values.get('epochs', 3)} | {values['random_mIoU']:.1f} | "
                         f"{values['trained_mIoU']:.1f} | "
                         f"{values['random_pixel_accuracy']:.1f} | {values['trained_pixel_accuracy']:.1f} |")
    return "\n".join(lines)


def guidance_table() -> str:
    lines = ["| experiment | target | guide | train images x epochs (test images) | last-epoch train acc "
             "| kNN test (best / final) | kNN | linear |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    from bench.guidance_study import ROWS

    order = {key: index for index, key in enumerate(ROWS)}
    for _, row in sorted(_rows("guidance"), key=lambda item: order.get(item[0], len(order))):
        curve = [value for _, value in row["knn_test_by_epoch"]]
        guide = row["guide"].replace(str(ROOT) + "/", "") or "none"
        lines.append(f"| {row['experiment']} | `{row['backbone']}` | {guide} | {row['train_images']} x {row['epochs']} "
                     f"({row.get('test_images', 5000)}) "
                     f"| {row['last_epoch_train_accuracy']:.1f} | {max(curve):.1f} / {curve[-1]:.1f} | "
                     f"{row['knn_top1']:.1f} | {row['linear_top1']:.1f} |")
    return "\n".join(lines)


def penalty(row: dict) -> str:
    """The ablation a compression row ran, if any (the perturbation penalty's weight; the recipe's is 1)."""
    weight = row.get("pela_options", {}).get("perturbation_weight")
    return "" if weight is None else f", perturbation weight {weight:g}"


def compression_table() -> str:
    from bench.architectures_table import EPOCHS, ROWS

    lines = ["| run | SimCLR epochs | rank ratio | PELA epochs | params (M) before -> after | GMACs before -> after "
             "| kNN original / SVD / PELA | linear original / SVD / PELA |",
             "| --- | ---: | ---: | ---: | --- | --- | --- | --- |"]
    rows = sorted(_rows("compression"), key=lambda item: (list(ROWS).index(item[1]["row"]), item[1]["rank_ratio"],
                                                          item[0]))
    for _, row in rows:
        original, svd, pela = row["original"], row["svd"], row["pela"]
        lines.append(
            f"| `{ROWS[row['row']][1]}`{penalty(row)} | {row.get('source_epochs', EPOCHS)} | {row['rank_ratio']:g} | "
            f"{pela.get('epochs', 3)} | "
            f"{original['parameters_m']:.3f} -> {pela['parameters_m']:.3f} | "
            f"{original['gmacs']:.4f} -> {pela['gmacs']:.4f} | {original['knn_top1']:.1f} / {svd['knn_top1']:.1f} / "
            f"{pela['knn_top1']:.1f} | {original['linear_top1']:.1f} / {svd['linear_top1']:.1f} / "
            f"{pela['linear_top1']:.1f} |")
    return "\n".join(lines)


def render() -> None:
    text = PAGE.read_text()
    for name, table in (("architectures", architecture_table()), ("guidance", guidance_table()),
                        ("compression", compression_table())):
        if f"<!-- {name} -->" in text and f"<!-- /{name} -->" in text:
            text = replace_block(text, name, table)
    PAGE.write_text(text)
