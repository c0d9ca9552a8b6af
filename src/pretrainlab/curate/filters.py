"""The three filters of a PASS-style curation: zero-shot text exclusion, near-duplicates, licence metadata.

Each filter looks at the images still kept and returns {index: reason} for those it drops, plus the
scores it computed, so the manifest can say why every image went and a user can re-tune a threshold.
A reason reads "KIND: detail"; the summary counts the kinds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from pretrainlab.errors import PretrainlabError

FILE_KEYS = ("file", "image", "path", "filename", "image_path")
LICENCE_KEYS = ("licence", "license")


def exclusion_drops(image_embeddings: torch.Tensor, query_embeddings: torch.Tensor, queries: list[str],
                    contrast_embeddings: torch.Tensor | None, threshold: float
                    ) -> tuple[dict[int, str], torch.Tensor]:
    """Images matching an exclusion query, by zero-shot score in an image-text space.

    image (N, E), query (Q, E), contrast (P, E) embeddings, all L2-normalised. With contrast prompts
    (what allowed images show), an image is dropped when its most similar prompt among queries and
    contrasts is a query (zero-shot classification); without them, when its cosine similarity with a
    query reaches `threshold`. Returns ({index: reason}, similarity to the queries (N, Q)).
    """
    similarity = image_embeddings @ query_embeddings.T  # (N, Q)
    best, which = similarity.max(dim=1)
    if contrast_embeddings is not None and len(contrast_embeddings):
        against = (image_embeddings @ contrast_embeddings.T).max(dim=1).values  # (N,)
        matched = best > against
        rule = "more similar to it than to every --against prompt"
    else:
        matched = best >= threshold
        rule = f"cosine >= {threshold:g}"
    return ({int(i): f"excluded by text query: '{queries[int(which[i])]}' (cosine {float(best[i]):.3f}, {rule})"
             for i in matched.nonzero().flatten()}, similarity)


def duplicate_drops(embeddings: torch.Tensor, names: list[str], threshold: float) -> dict[int, str]:
    """Greedy near-duplicate removal in the given order: an image whose cosine similarity with an earlier
    kept image reaches `threshold` is dropped, naming that image. embeddings (N, D) L2-normalised.

    One pass with a growing table of kept embeddings: N matrix-vector products, fine for the tens of
    thousands of images a CPU run handles (an approximate index would be the next step beyond that)."""
    drops: dict[int, str] = {}
    kept = torch.empty_like(embeddings)  # (N, D); the first `count` rows are the kept images
    kept_index: list[int] = []
    for index, embedding in enumerate(embeddings):
        if kept_index:
            value, position = (kept[: len(kept_index)] @ embedding).max(dim=0)
            if float(value) >= threshold:
                drops[index] = f"near-duplicate: of {names[kept_index[int(position)]]} (cosine {float(value):.3f})"
                continue
        kept[len(kept_index)] = embedding
        kept_index.append(index)
    return drops


def read_licences(path: Path) -> dict[str, str]:
    """Relative image path -> licence, from a CSV (columns file + licence) or JSONL metadata file."""
    if not path.is_file():
        raise PretrainlabError(f"metadata file not found: {path}")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    licences = {}
    for row in rows:
        file_key = next((k for k in FILE_KEYS if k in row), None)
        licence_key = next((k for k in LICENCE_KEYS if k in row), None)
        if file_key is None or licence_key is None:
            raise PretrainlabError(f"metadata {path} needs a file column ({'/'.join(FILE_KEYS)}) and a licence "
                                   f"column ({'/'.join(LICENCE_KEYS)}); got {sorted(row)}")
        licences[str(row[file_key]).strip()] = str(row[licence_key] or "").strip()
    return licences


def licence_drops(names: list[str], licences: dict[str, str], allowed: list[str] | None) -> dict[int, str]:
    """Images without a licence entry, with an empty one, or (when `allowed` is given) with another one."""
    drops = {}
    allowed_set = {a.lower() for a in allowed} if allowed else None
    for index, name in enumerate(names):
        licence = licences.get(name, "")
        if not licence:
            drops[index] = "licence: no licence metadata"
        elif allowed_set is not None and licence.lower() not in allowed_set:
            drops[index] = f"licence: '{licence}' is not allowed ({', '.join(allowed)})"
    return drops
