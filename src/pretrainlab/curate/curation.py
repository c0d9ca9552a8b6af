"""Curate an image folder into a manifest (and a copy) of the images worth pre-training on.

The steps of PASS (Asano et al., "PASS: An ImageNet replacement for self-supervised pretraining without
humans", arXiv 2109.13228), with the parts PASS did by hand or with a detector done here by a model:
1. licence: with a metadata file, images without a licence entry (or with one not in the allowed list)
   are dropped (PASS kept only CC-BY images);
2. content: images matching an `--exclude` text query are dropped by ZERO-SHOT score in the joint space
   of an image-text run trained by pretrainlab (`--model RUN`, e.g. a CLIP run); PASS removed images
   with humans using a face/person detector and human review; here the rule is only as good as the run's
   text side (a CLIP trained on a small caption set knows only that set's words);
3. near-duplicates: among the remaining images, in sorted file order, an image whose embedding (the
   model's pooled features standardised over the folder, or mean-centred 16x16 grey thumbnails without a
   model) is at least `duplicate_threshold` cosine-similar to an earlier kept image is dropped, naming it.
Unreadable files are dropped first. The input folder is only read: the output folder (which must lie
outside it) receives `manifest.jsonl` (every file: kept or not, the reason, its scores), `kept.txt`,
`summary.json` and, unless `copy` is off, copies of the kept images under `images/` (same relative paths).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pretrainlab.atomic import atomic_path
from pretrainlab.curate.filters import duplicate_drops, exclusion_drops, licence_drops, read_licences
from pretrainlab.data.folder import decode_square, list_images
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.features import extract_features, normalisation
from pretrainlab.eval.image_text import load_image_text_model, text_tower_missing
from pretrainlab.eval.target import EvalTarget, load_target

THUMBNAIL = 16


@dataclass(frozen=True)
class CurationConfig:
    """Args:
        data: `folder:PATH`, the images to curate (read only).
        out: output folder, outside the input folder.
        exclude: text queries; matching images are dropped (needs `model` with a text tower).
        against: prompts of what allowed images show; with them exclusion is a zero-shot classification.
        exclude_threshold: without `against`, the cosine similarity to a query at which an image is dropped.
        model: a pretrainlab run folder (an image-text run for `exclude`).
        duplicate_threshold: cosine similarity at which an image counts as a near-duplicate (1: off).
        metadata: CSV/JSONL of file (relative to the input folder) + licence.
        allowed_licences: licences to keep (empty: any non-empty licence).
        copy: copy the kept images into OUT/images.
    """

    data: str
    out: str
    exclude: tuple[str, ...] = ()
    against: tuple[str, ...] = ()
    exclude_threshold: float = 0.3
    model: str | None = None
    duplicate_threshold: float = 0.95
    metadata: str | None = None
    allowed_licences: tuple[str, ...] = ()
    copy: bool = True


def check_folders(config: CurationConfig) -> tuple[Path, Path]:
    kind, _, argument = config.data.partition(":")
    root = Path(argument).expanduser().resolve()
    if kind != "folder" or not root.is_dir():
        raise PretrainlabError(f"curate reads an image folder: folder:PATH, got '{config.data}'")
    out = Path(config.out).expanduser().resolve()
    if out == root or root in out.parents or out in root.parents:
        raise PretrainlabError(f"--out {out} must lie outside the input folder {root} (and not contain it): "
                               "curation never writes into its input")
    if (out / "manifest.jsonl").exists():
        raise PretrainlabError(f"{out} already holds a curation (manifest.jsonl); choose another --out")
    if config.exclude and config.model is None:
        raise PretrainlabError("--exclude scores images against text: give --model RUN, an image-text run "
                               "(pretrainlab pretrain --method clip)")
    return root, out


def decode_files(files: list[Path], size: int, grey: bool) -> tuple[np.ndarray, list[int]]:
    """(images (M, size, size, C) of the readable files, their indices into `files`)."""
    decoded = [decode_square(f, size, "L" if grey else "RGB") for f in files]
    readable = [i for i, image in enumerate(decoded) if image is not None]
    channels = 1 if grey else 3
    images = np.stack([decoded[i] for i in readable]) if readable else np.zeros((0, size, size, channels), np.uint8)
    return images, readable


def thumbnails(images: np.ndarray) -> torch.Tensor:
    """Mean-centred, L2-normalised grey pixels (N, THUMBNAIL ** 2): a model-free near-duplicate signature."""
    pixels = torch.from_numpy(images).float().mean(dim=-1).unsqueeze(1)  # (N, 1, H, W)
    small = F.interpolate(pixels, size=(THUMBNAIL, THUMBNAIL), mode="area").flatten(1)
    return F.normalize(small - small.mean(dim=1, keepdim=True), dim=1)


def centred(features: torch.Tensor) -> torch.Tensor:
    """Features (N, D) standardised over the folder, then L2-normalised. Pooled CNN features are all
    non-negative (ReLU, average pooling), so their raw cosine similarity is high for any two images
    (measured: 0.95 flagged 97 % of 330 distinct digits); standardised, distinct images stop looking alike."""
    mean, std = features.mean(dim=0), features.std(dim=0).clamp(min=1e-6)
    return F.normalize((features - mean) / std, dim=1)


def curate_folder(config: CurationConfig, device: torch.device | None = None) -> dict[str, Any]:
    """Runs the curation; returns the summary written to OUT/summary.json."""
    root, out = check_folders(config)
    device = device or torch.device("cpu")
    files, _, _, skipped = list_images(root)  # skipped: symlink loops, FIFOs, ... (never opened)
    if not files:
        raise PretrainlabError(f"no images in {root}")
    names = [str(f.relative_to(root)) for f in files]
    target: EvalTarget | None = None
    if config.model is not None:
        target = load_target(config.model, img_size=0, in_chans=0)
        if target.run_dir is None:
            raise PretrainlabError(f"--model must be a pretrainlab run folder, got '{config.model}'")
        if config.exclude and (reason := text_tower_missing(target)) is not None:
            raise PretrainlabError(f"--exclude {reason}")
    size, grey = (target.img_size, target.in_chans == 1) if target else (64, True)
    images, readable = decode_files(files, size, grey)
    reasons: dict[int, str] = {i: "unreadable: not a decodable image" for i in range(len(files))
                               if i not in set(readable)}
    scores: dict[int, dict[str, float]] = {}
    if config.metadata:
        for index, reason in licence_drops(names, read_licences(Path(config.metadata)),
                                           list(config.allowed_licences) or None).items():
            reasons.setdefault(index, reason)
    features = None
    if target is not None and len(images):
        mean, std = normalisation(target, images)
        features = extract_features(target, images, mean, std, device)  # (M, D), rows follow `readable`
    alive = [row for row, index in enumerate(readable) if index not in reasons]  # rows into `images`
    if config.exclude and alive:
        model = load_image_text_model(target)
        embedded = model.image_embeddings(features[alive])
        against = model.text_embeddings(list(config.against)) if config.against else None
        drops, similarity = exclusion_drops(embedded, model.text_embeddings(list(config.exclude)),
                                            list(config.exclude), against, config.exclude_threshold)
        for position, row in enumerate(alive):
            scores[readable[row]] = {q: round(float(v), 4) for q, v in zip(config.exclude, similarity[position],
                                                                            strict=True)}
            if position in drops:
                reasons[readable[row]] = drops[position]
        alive = [row for row in alive if readable[row] not in reasons]
    if config.duplicate_threshold < 1 and alive:
        signature = centred(features[alive]) if features is not None else thumbnails(images[alive])
        for position, reason in duplicate_drops(signature, [names[readable[r]] for r in alive],
                                                config.duplicate_threshold).items():
            reasons[readable[alive[position]]] = reason
    return write_outputs(config, root, out, files, names, reasons, scores, skipped)


def write_outputs(config: CurationConfig, root: Path, out: Path, files: list[Path], names: list[str],
                  reasons: dict[int, str], scores: dict[int, dict[str, float]], skipped: list[str]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    kept = [index for index in range(len(files)) if index not in reasons]
    if config.copy:
        for index in kept:
            destination = out / "images" / names[index]
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(files[index], destination)  # reads the input, writes only under OUT
    lines = [json.dumps({"file": names[i], "kept": i not in reasons, "reason": reasons.get(i),
                         **({"exclusion_scores": scores[i]} if i in scores else {})}) for i in range(len(files))]
    with atomic_path(out / "kept.txt") as tmp:
        tmp.write_text("".join(f"{names[i]}\n" for i in kept))
    by_reason = Counter(reason.partition(":")[0] for reason in reasons.values())
    summary = {"input": str(root), "images": len(files), "kept": len(kept), "dropped": len(reasons),
               "dropped_by_reason": dict(by_reason), "skipped_entries": skipped,
               "settings": {**config.__dict__, "out": str(out)}}
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    with atomic_path(out / "manifest.jsonl") as tmp:  # last: its presence marks a finished curation
        tmp.write_text("\n".join(lines) + "\n")
    return summary
