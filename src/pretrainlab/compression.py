"""Low-rank compression of a finished run (PELA, arXiv 2310.10700): the library side of `pretrainlab compress`.

The compressed run is an ordinary run folder: method `pela`, the teacher's data, image size, training subset and
architecture, the low-rank backbone exported as the registered timm model `pela_lowrank`. `compression.json`
beside it records the parameter counts before and after.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pretrainlab.atomic import atomic_path
from pretrainlab.backbones import load_backbone
from pretrainlab.backbones.factory import read_backbone_metadata
from pretrainlab.backbones.lowrank import check_rank_ratio, low_rank_layers
from pretrainlab.errors import PretrainlabError
from pretrainlab.pipeline import build_run_config, pretrain, saved_run_config

SIZE_KWARGS = ("num_classes", "in_chans", "img_size")  # set by the pipeline from the data, not options


def compression_config(run_dir: Path, rank_ratio: float, out: Path | None, train_overrides: dict[str, Any],
                       option_overrides: dict[str, Any]) -> Any:
    """The `pela` RunConfig that compresses `run_dir`."""
    try:
        check_rank_ratio(rank_ratio)
    except ValueError as error:
        raise PretrainlabError(str(error)) from None
    weights = run_dir / "backbone.safetensors"
    if not (run_dir / "config.yaml").is_file() or not weights.is_file():
        raise PretrainlabError(f"{run_dir} is not a finished run folder (config.yaml and backbone.safetensors)")
    saved = saved_run_config(run_dir)
    resolved_size = resolved_img_size(run_dir)
    meta = read_backbone_metadata(weights)
    options = {k: v for k, v in meta["create_kwargs"].items() if k not in SIZE_KWARGS}
    overrides = {"backbone": meta["name"], "data": saved.data, "img_size": resolved_size, "max_train": saved.max_train,
                 "download": saved.download, "backbone_options": options or None,
                 "out": str(out or run_dir.with_name(f"{run_dir.name}-pela{rank_ratio:g}"))}
    return build_run_config("pela", overrides, train_overrides,
                            {"teacher": str(run_dir), "rank_ratio": rank_ratio, **option_overrides})


def resolved_img_size(run_dir: Path) -> int | None:
    import yaml

    resolved = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("resolved", {}) or {}
    return resolved.get("img_size")


def compress_run(run_dir: Path, rank_ratio: float, out: Path | None = None,
                 train_overrides: dict[str, Any] | None = None, option_overrides: dict[str, Any] | None = None,
                 show_progress: bool = True) -> dict[str, Any]:
    """Factorises `run_dir`'s backbone at `rank_ratio` and distils it (PELA); returns the training summary and
    the parameter counts before and after."""
    config = compression_config(Path(run_dir), rank_ratio, out, dict(train_overrides or {}),
                                dict(option_overrides or {}))
    summary = pretrain(config, show_progress=show_progress)
    before = load_backbone(Path(run_dir) / "backbone.safetensors")
    after = load_backbone(Path(config.out) / "backbone.safetensors")
    record = {"teacher": str(run_dir), "rank_ratio": rank_ratio,
              "parameters_before": sum(p.numel() for p in before.parameters()),
              "parameters_after": sum(p.numel() for p in after.parameters()),
              "factorised_layers": len(low_rank_layers(after.model))}
    with atomic_path(Path(config.out) / "compression.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return {**summary, **record}
