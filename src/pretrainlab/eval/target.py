"""What an evaluation measures: a backbone plus the preprocessing it was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from pretrainlab.backbones import Backbone, create_backbone, load_backbone, load_weights_file
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.export import exported_metadata, load_exported
from pretrainlab.eval.representation import parse_selector, select, split_spec


@dataclass
class EvalTarget:
    """Args:
        backbone: the network (in eval mode while measured).
        label: how the user named it: a run folder or timm:NAME.
        img_size: input size it expects.
        mean, std: its training normalisation; None means "use the evaluated data's own statistics".
        run_dir: the run folder, when there is one.
    """

    backbone: Backbone
    label: str
    img_size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    run_dir: Path | None = None

    @property
    def in_chans(self) -> int:
        return int(self.backbone.create_kwargs.get("in_chans", 3))


def load_run_target(run_dir: Path) -> EvalTarget:
    """Loads `backbone.safetensors` and the normalisation recorded in the run's config.yaml."""
    weights = run_dir / "backbone.safetensors"
    if not weights.exists():
        raise PretrainlabError(f"{run_dir} has no backbone.safetensors (is the run finished? resume it first)")
    resolved = {}
    config_file = run_dir / "config.yaml"
    if config_file.exists():
        resolved = (yaml.safe_load(config_file.read_text()) or {}).get("resolved", {})
    backbone = load_backbone(weights)
    img_size = int(resolved.get("img_size", backbone.create_kwargs.get("img_size", 224)))
    mean, std = resolved.get("mean"), resolved.get("std")
    return EvalTarget(backbone, str(run_dir), img_size, tuple(mean) if mean else None, tuple(std) if std else None,
                      run_dir)


def load_target(spec: str, img_size: int, in_chans: int, weights: Path | None = None) -> EvalTarget:
    """`spec` is a run folder or `timm:NAME`; a timm model is random (fair init) unless `weights` is given.

    `SPEC@SELECTOR` measures one representation of it (`RUN@head.1`, `RUN@dim64`, `RUN@layer2,dim64`; see
    eval/representation.py), and a file written by `pretrainlab export` loads as what it holds.
    """
    base, selector = split_spec(spec)
    if selector is not None:
        target = load_target(base, img_size, in_chans, weights)
        target.backbone = select(target.backbone, parse_selector(selector), target.run_dir)
        target.label = spec
        return target
    if spec.endswith(".safetensors") and Path(spec).is_file() and exported_metadata(Path(spec)) is not None:
        backbone, info = load_exported(Path(spec))
        mean, std = info["mean"], info["std"]
        return EvalTarget(backbone, spec, info["img_size"], tuple(mean) if mean else None, tuple(std) if std else None)
    if spec.startswith("timm:"):
        name = spec.removeprefix("timm:")
        backbone = create_backbone(name, img_size, in_chans)
        label = spec
        if weights is not None:
            load_weights_file(backbone, Path(weights))
            label = f"{spec}+{Path(weights).name}"
        return EvalTarget(backbone, label, img_size)
    run_dir = Path(spec)
    if not run_dir.is_dir():
        raise PretrainlabError(f"'{spec}' is neither a run folder nor timm:NAME (e.g. timm:resnet18), optionally "
                               "followed by @head.N, @dimD or @layerL,dimD, nor a file from pretrainlab export")
    return load_run_target(run_dir)
