"""captions:PATH (CSV, JSONL; bad rows counted) and captions:SPEC (synthetic captions) sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretrainlab.cli import main
from pretrainlab.data import load_source
from pretrainlab.data.captions import (
    CAPTION_COUNTS,
    CAPTIONS,
    caption_ids,
    caption_texts,
    choose_captions,
    encode_captions,
    image_captions,
)
from pretrainlab.data.synthetic_captions import canvas_captions, relation, with_article
from pretrainlab.errors import PretrainlabError


def write_images(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        pixels = np.full((12, 12), 20 * index, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"im{index}.png")
        names.append(f"im{index}.png")
    return names


def test_csv_gathers_captions_and_counts_bad_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = write_images(tmp_path / "images", 6)
    (tmp_path / "images" / "broken.png").write_bytes(b"not an image")
    rows = ["image,caption"] + [f"images/{name},a picture number {i}" for i, name in enumerate(names)]
    rows += ["images/im0.png,another caption of the first", "images/im1.png,  ", "images/missing.png,gone",
             "images/broken.png,unreadable"]
    (tmp_path / "caps.csv").write_text("\n".join(rows))
    source = load_source(f"captions:{tmp_path / 'caps.csv'}", image_size=8)
    assert source.extra["bad_rows"] == {"empty caption": 1, "missing image": 1, "unreadable image": 1}
    assert source.skipped_files == 3
    assert len(source.train) + len(source.test) == 6 and source.train.images.shape[1:] == (8, 8, 1)
    everything = (image_captions(source.train) or []) + (image_captions(source.test) or [])
    assert sorted(len(c) for c in everything) == [1, 1, 1, 1, 1, 2]
    assert ["a picture number 0", "another caption of the first"] in everything


def test_jsonl_with_caption_lists_and_malformed_lines(tmp_path: Path) -> None:
    names = write_images(tmp_path, 5)
    lines = [json.dumps({"image": name, "captions": [f"first {i}", f"second {i}"]}) for i, name in enumerate(names)]
    lines += ["{not json", json.dumps({"caption": "no image"}), json.dumps({"image": names[0], "caption": ""})]
    (tmp_path / "caps.jsonl").write_text("\n".join(lines))
    source = load_source(f"captions:{tmp_path / 'caps.jsonl'}", image_size=8)
    assert source.extra["bad_rows"] == {"malformed line": 1, "no image path": 1, "empty caption": 1}
    assert all(len(c) == 2 for c in image_captions(source.train))
    assert len(caption_texts(source.train)) == 2 * len(source.train)


def test_file_without_readable_rows_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty.csv").write_text("image,caption\nmissing.png,a caption\n")
    with pytest.raises(PretrainlabError, match="no readable rows"):
        load_source(f"captions:{tmp_path / 'empty.csv'}")
    code = main(["pretrain", "--method", "clip", "--data", f"captions:{tmp_path / 'empty.csv'}",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    (tmp_path / "columns.csv").write_text("file_name,words\nx.png,a caption\n")
    with pytest.raises(PretrainlabError, match="image column"):
        load_source(f"captions:{tmp_path / 'columns.csv'}")


def test_captions_round_trip_and_seeded_choice() -> None:
    array, counts = encode_captions([["a 3", "ein Bild ä"], ["x"]])
    assert array.shape[:2] == (2, 2) and counts.tolist() == [2, 1]
    captions, counts_t = torch.from_numpy(array), torch.from_numpy(counts)
    first = choose_captions(captions, counts_t, torch.Generator().manual_seed(0))
    again = choose_captions(captions, counts_t, torch.Generator().manual_seed(0))
    assert first == again and first[0] in ("a 3", "ein Bild ä") and first[1] == "x"
    assert caption_ids(["a", "b", "a"]).tolist()[0] == caption_ids(["a"]).item()


def test_synthetic_captions_name_objects_and_relations() -> None:
    names = [str(d) for d in range(10)]
    cells = np.array([4, 0, 8, 2])  # a 3 top left, a 7 bottom left, a 1 bottom right
    where, related, inventory = canvas_captions(cells, names, np.random.default_rng(0))
    assert where == "a 3 at the top left, a 7 at the bottom left and a 1 at the bottom right"
    assert inventory.startswith("three objects: ") and all(f"a {d}" in inventory for d in "371")
    assert relation(0, 2) == "above" and relation(3, 2) == "right of" and relation(0, 3) == "above and left of"
    assert with_article("8") == "an 8" and with_article("Ankle boot") == "an ankle boot"


def test_captioned_composed_and_labelled_sources() -> None:
    composed = load_source("captions:composed:builtin:40")
    assert composed.spec == "captions:composed:builtin:40" and composed.has_multilabels
    for cells, captions in zip(composed.train.extras["cells"], image_captions(composed.train), strict=True):
        shown = {composed.classes[c - 1] for c in cells if c}
        assert {word for word in captions[2].replace(",", "").split() if word.isdigit()} == shown
    labelled = load_source("captions:builtin")
    assert labelled.test is not None and CAPTIONS in labelled.test.extras
    label = int(labelled.train.labels[0])
    assert image_captions(labelled.train)[0][0] == f"a photo of {with_article(str(label))}."
    assert labelled.train.extras[CAPTION_COUNTS].min() == 4
    with pytest.raises(PretrainlabError, match="caption file"):
        load_source("captions:nothing-here")
