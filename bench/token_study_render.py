"""The tables of docs/token_datasets.md from bench/results/tokens/ (written by bench/token_study.py)."""

from __future__ import annotations

import json
from pathlib import Path

ROWS = {  # eval row name -> (what, data, backbone)
    "mtm": ("MTM + TokenAdapt + ColorAdapt", "tokens", "vit_token_nano"),
    "mtm_noaug": ("MTM, no token augmentation", "tokens", "vit_token_nano"),
    "random_token": ("random init", "tokens", "vit_token_nano"),
    "mae": ("MAE on pixels", "pixels", "vit_nano_patch4"),
    "random_pixel": ("random init", "pixels", "vit_nano_patch4"),
}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def storage_table(results: Path) -> list[str]:
    lines = ["| data | images | grid x codes (used) | token grid B | packed B | token file B/image | uint8 pixels B | "
             "JPEG B | pixels / grid | JPEG / grid | held-out PSNR | crop+flip: TokenAdapt / resampling |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, label in (("fashion", "Fashion-MNIST 28 px grey"), ("cifar", "CIFAR-10 (JPEG q75) 32 px RGB")):
        summary = _load(results / f"tokenize-{name}.json")
        if summary is None:
            continue
        meta, s = summary["meta"], summary["storage"]
        grid = meta["grid"]
        lines.append(
            f"| {label} | {sum(meta['images'].values()):,} | {grid[0]}x{grid[1]} x {meta['codebook_size']} "
            f"({meta['codes_used']}) | {s['token_grid_bytes']} | {s['packed_grid_bytes']:g} | "
            f"{s['file_bytes_per_image']:.1f} | {s['pixel_bytes']:,} | {s['jpeg_bytes']:.0f} | "
            f"{s['pixels_over_tokens']:.1f}x | {s['jpeg_over_tokens']:.1f}x | "
            f"{meta['reconstruction']['psnr_db']:.1f} dB | {meta['token_adapt_agreement']:.1f} % / "
            f"{meta['grid_resampling_agreement']:.1f} % |")
    return lines


def accuracy_table(results: Path) -> list[str]:
    lines = ["| pre-training | data | backbone | kNN top-1 | linear top-1 | pre-training wall time |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, (what, data, backbone) in ROWS.items():
        row = _load(results / f"eval-{name}.json")
        if row is None:
            continue
        values = {r["protocol"]: r for r in row["results"]}
        knn, linear = values.get("knn"), values.get("linear")
        k = knn["settings"].get("k") if knn else None
        pretrain = _load(results / f"pretrain-{name}.json")
        wall = f"{pretrain['wall_seconds'] / 60:.1f} min ({pretrain['epochs']} epochs)" if pretrain else "-"
        lines.append(f"| {what} | {data} | {backbone} | {knn['value']:.2f} % (k={k}) | {linear['value']:.2f} % | "
                     f"{wall} |" if knn and linear else f"| {what} | {data} | {backbone} | - | - | {wall} |")
    return lines


def render(results: Path, doc: Path) -> None:
    """Writes the two tables to bench/results/tokens/tables.md (docs/token_datasets.md quotes them)."""
    text = "\n".join(["## Storage per image", "", *storage_table(results), "", "## kNN and linear top-1", "",
                      *accuracy_table(results), ""])
    (results / "tables.md").write_text(text)
    print(text)
