"""Curation: licence, zero-shot exclusion and near-duplicate filters, a manifest, and an untouched input folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pretrainlab.cli import main
from pretrainlab.curate.filters import duplicate_drops, exclusion_drops
from pretrainlab.data import load_source
from pretrainlab.pipeline import build_run_config, untrained_run


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: content hash and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "images"
    folder.mkdir()
    for index in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / f"im{index}.png")
    Image.open(folder / "im1.png").save(folder / "im1_copy.png")  # a duplicate, sorted after its original
    (folder / "broken.png").write_bytes(b"not a png")
    (root / "licences.csv").write_text("file,licence\n" + "".join(
        f"im{i}.png,{'CC-BY' if i != 4 else 'all rights reserved'}\n" for i in range(6)) + "im1_copy.png,CC-BY\n")
    return folder


def test_curate_writes_manifest_and_never_touches_the_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = make_folder(tmp_path)
    before = snapshot(folder)
    code = main(["curate", f"folder:{folder}", "--out", str(tmp_path / "curated"), "--metadata",
                 str(tmp_path / "licences.csv"), "--allow-licence", "CC-BY"])
    assert code == 0, capsys.readouterr().err
    assert snapshot(folder) == before
    manifest = [json.loads(line) for line in (tmp_path / "curated" / "manifest.jsonl").read_text().splitlines()]
    reasons = {row["file"]: row["reason"] for row in manifest}
    assert reasons["broken.png"].startswith("unreadable:")
    assert reasons["im1_copy.png"].startswith("near-duplicate: of im1.png")
    assert reasons["im4.png"].startswith("licence:") and "not allowed" in reasons["im4.png"]
    summary = json.loads((tmp_path / "curated" / "summary.json").read_text())
    assert summary["dropped_by_reason"] == {"unreadable": 1, "licence": 1, "near-duplicate": 1}
    kept = sorted(p.name for p in (tmp_path / "curated" / "images").iterdir())
    assert kept == ["im0.png", "im1.png", "im2.png", "im3.png", "im5.png"]
    assert (tmp_path / "curated" / "kept.txt").read_text().split() == kept
    assert main(["curate", f"folder:{folder}", "--out", str(folder / "inside")]) == 2  # never write into the input
    assert main(["curate", f"folder:{folder}", "--out", str(tmp_path / "x"), "--exclude", "a person"]) == 2
    assert snapshot(folder) == before


def test_exclusion_with_a_clip_run(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    before = snapshot(folder)
    source = load_source("captions:composed:builtin:8")
    overrides = {"backbone": "tinycnn", "data": source.spec, "out": str(tmp_path / "clip"), "img_size": 28}
    config = build_run_config("clip", overrides, {"seed": 0}, {"text_width": 16, "text_depth": 1, "embed_dim": 8})
    run = untrained_run(config, source)
    for threshold, expected in (("-1.01", 7), ("1.01", 0)):  # every readable image, or none
        out = tmp_path / f"out{threshold}"
        assert main(["curate", f"folder:{folder}", "--out", str(out), "--model", str(run), "--exclude", "a 3",
                     "--exclude-threshold", threshold, "--duplicate-threshold", "1", "--no-copy"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["dropped_by_reason"].get("excluded by text query", 0) == expected
    assert snapshot(folder) == before


def test_exclusion_and_duplicate_rules() -> None:
    images = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=1)
    query, contrast = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    drops, similarity = exclusion_drops(images, query, ["q"], None, 0.5)
    assert sorted(drops) == [0, 1] and similarity.shape == (3, 1)
    drops, _ = exclusion_drops(images, query, ["q"], contrast, 0.5)
    assert sorted(drops) == [0]  # image 1 is closer to the contrast prompt
    embeddings = F.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [0.05, 0.99]]), dim=1)
    drops = duplicate_drops(embeddings, ["a", "b", "c", "d"], 0.95)
    assert sorted(drops) == [1, 3] and "of a" in drops[1] and "of c" in drops[3]
