"""Renders the three tables of docs/architectures.md from bench/results/{architectures,guidance,compression}/.

The page's prose lives in docs/architectures.md itself; only the text between each pair of markers
(<!-- architectures --> ... <!-- /architectures -->, and likewise guidance and compression) is rewritten.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "architectures.md"


def _rows(kind: str) -> list[tuple[str, dict]]:
    return [(p.stem, json.loads(p.read_text())) for p in sorted((RESULTS / kind).glob("*.json"))]


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def architecture_table() -> str:
    from bench.architectures_table import ROWS

    lines = ["| paper | backbone | method | params (M) | GMACs | train img/s | infer img/s | kNN random | kNN | "
             "linear random | linear |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    results = dict(_rows("architectures"))
    for key, (paper, backbone, method, options) in ROWS.items():
        row = results.get(key, {})
        if "trained" not in row:
            continue
        random = row.get("random") or next((r.get("random") for k, r in results.items()
                                            if ROWS[k][1] == backbone and r.get("random")), {})
        speed = row.get("speed") or next((r.get("speed") for k, r in results.items()
                                          if ROWS[k][1] == backbone and r.get("speed")), {})
        trained = row["trained"]
        label = method + ("".join(f", {k}={v}" for k, v in options.items()))
        lines.append(
            f"| {paper} | `{backbone}` | {label} | {_number(speed['params'] / 1e6 if speed else None, 2)} | "
            f"{_number(speed.get('gmacs'), 3)} | {_number(speed.get('train_images_per_s'), 0)} | "
            f"{_number(speed.get('infer_images_per_s'), 0)} | {_number(random.get('knn_top1'))} | "
            f"{_number(trained['knn_top1'])} | {_number(random.get('linear_top1'))} | "
            f"{_number(trained['linear_top1'])} |")
    dense = [(key, row["dense"]) for key, row in results.items() if "dense" in row]
    if dense:
        lines += ["", "Dense probe (linear 1x1 head on the last feature map, composed Fashion-MNIST canvases of 56 px, "
                  f"{dense[0][1]['canvases']} training / {dense[0][1]['canvases'] // 4} test canvases):", "",
                  "| backbone | mIoU random | mIoU SimCLR | pixel acc. random | pixel acc. SimCLR |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for _, values in dense:
            lines.append(f"| `{values['backbone']}` | {values['random_mIoU']:.1f} | {values['trained_mIoU']:.1f} | "
                         f"{values['random_pixel_accuracy']:.1f} | {values['trained_pixel_accuracy']:.1f} |")
    return "\n".join(lines)


def guidance_table() -> str:
    lines = ["| experiment | target | guide | train images x epochs | last-epoch train acc | kNN test (best / final) "
             "| kNN | linear |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for _, row in _rows("guidance"):
        curve = [value for _, value in row["knn_test_by_epoch"]]
        guide = row["guide"].replace(str(ROOT) + "/", "") or "none"
        lines.append(f"| {row['experiment']} | `{row['backbone']}` | {guide} | {row['train_images']} x {row['epochs']} "
                     f"| {row['last_epoch_train_accuracy']:.1f} | {max(curve):.1f} / {curve[-1]:.1f} | "
                     f"{row['knn_top1']:.1f} | {row['linear_top1']:.1f} |")
    return "\n".join(lines)


def compression_table() -> str:
    lines = ["| run | rank ratio | params (M) before -> after | GMACs before -> after | kNN original / SVD / PELA "
             "| linear original / SVD / PELA |", "| --- | ---: | --- | --- | --- | --- |"]
    for _, row in _rows("compression"):
        original, svd, pela = row["original"], row["svd"], row["pela"]
        lines.append(
            f"| {row['row']} | {row['rank_ratio']:g} | {original['parameters_m']:.3f} -> {pela['parameters_m']:.3f} | "
            f"{original['gmacs']:.4f} -> {pela['gmacs']:.4f} | {original['knn_top1']:.1f} / {svd['knn_top1']:.1f} / "
            f"{pela['knn_top1']:.1f} | {original['linear_top1']:.1f} / {svd['linear_top1']:.1f} / "
            f"{pela['linear_top1']:.1f} |")
    return "\n".join(lines)


def render() -> None:
    text = PAGE.read_text()
    for name, table in (("architectures", architecture_table()), ("guidance", guidance_table()),
                        ("compression", compression_table())):
        start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
        if start in text and end in text:
            text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end):]
    PAGE.write_text(text)
