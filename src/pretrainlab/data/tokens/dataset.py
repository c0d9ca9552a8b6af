"""`tokenize`: a data spec in, a token file out (train the tokenizer, encode both splits, write atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pretrainlab.atomic import atomic_path, check_output_path
from pretrainlab.data.spec import load_source
from pretrainlab.data.subsets import limit_source
from pretrainlab.data.tokens.storage import jpeg_bytes_of_spec, storage_report
from pretrainlab.data.tokens.token_file import write_token_file
from pretrainlab.data.tokens.training import TokenizeConfig, check_tokenizable, encode_images, train_tokenizer
from pretrainlab.errors import PretrainlabError


def tokenize_dataset(spec: str, out: Path, config: TokenizeConfig, max_train: int | None = None,
                     image_size: int | None = None, show_progress: bool = True) -> dict:
    """Trains a tokenizer on `spec`'s training images (at most `max_train`, class-balanced) and writes every
    image of both splits as codes to `out`. Returns the tokenizer's facts and the storage per image."""
    out = Path(out)
    if out.suffix != ".npz":
        raise PretrainlabError(f"--out {out}: a token file is an npz archive; name it *.npz")
    check_output_path(out, "--out", want_folder=False)
    source = load_source(spec, image_size=image_size)
    check_tokenizable(source, config)
    tokenizer = train_tokenizer(limit_source(source, max_train), config, show_progress)
    splits = {name: (encode_images(tokenizer.vq, split.images), split.labels)
              for name, split in (("train", source.train), ("test", source.test)) if split is not None}
    tokenizer.meta["images"] = {name: int(len(codes)) for name, (codes, _) in splits.items()}
    tokenizer.meta["codes_used"] = int(len(np.unique(np.concatenate([c.ravel() for c, _ in splits.values()]))))
    with atomic_path(out) as tmp:
        write_token_file(tmp, tokenizer, splits, source.classes)
    images = sum(tokenizer.meta["images"].values())
    jpeg, note = jpeg_bytes_of_spec(spec, source.train.images)
    return {"out": str(out), "meta": tokenizer.meta,
            "storage": storage_report(tokenizer.meta, out.stat().st_size, images, jpeg, note)}
