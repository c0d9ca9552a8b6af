"""Select any named representation of a run: `RUN@head.1`, `RUN@dim64`, `RUN@layer2,dim64` (export: export.py).

Selectors (after the last "@" of a backbone spec):
- `backbone`: the pooled backbone features (the same as the bare run folder).
- `head.N`: after layer N of the method's projection head (arXiv 2403.11391; SimCLRv2, arXiv 2006.10029,
  fine-tunes from `head.0`). The method is rebuilt from the run's config.yaml and checkpoints/last.pt.
- `dimD`, `layerL,dimD`, `layerL`: the first D pooled features, after the first L transformer blocks
  (Matryoshka / Starbucks embeddings, arXiv 2410.13230); works on any run, and on `timm:NAME`.
- any other name a method lists in `Method.representations` (computed by the whole rebuilt method).

Every selection is a `Backbone` (see `backbones/selected.py`), so every protocol uses it unchanged.
The methods registry is imported inside functions: a method may itself load evaluation targets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml

from pretrainlab.backbones import Backbone, create_backbone
from pretrainlab.backbones.selected import FULL_DEPTH, HeadBackbone, NestedBackbone
from pretrainlab.errors import PretrainlabError
from pretrainlab.safe_files import load_torch_file

NESTED = re.compile(r"^(?:layer(?P<layer>\d+))?,?(?:dim(?P<dim>\d+))?$")


@dataclass(frozen=True)
class Selection:
    """A parsed selector: a nested view (depth, dim) or a named representation."""

    text: str
    depth: int = FULL_DEPTH
    dim: int = -1
    name: str | None = None

    @property
    def nested(self) -> bool:
        return self.name is None


def parse_selector(text: str) -> Selection:
    """"dim64" | "layer2,dim64" | "layer2" | "head.1" | "backbone" | another representation name."""
    match = NESTED.match(text)
    if text and match and (match["layer"] or match["dim"]):
        depth, dim = int(match["layer"] or FULL_DEPTH), int(match["dim"] or -1)
        if depth == 0 or dim == 0:
            raise PretrainlabError(f"selector '{text}': layers and dims count from 1")
        return Selection(text, depth, dim)
    if not re.fullmatch(r"[A-Za-z][\w.\-]*", text):
        raise PretrainlabError(f"'{text}' is not a representation selector; use backbone, head.N, dimD or layerL,dimD")
    return Selection(text, name=text)


def split_spec(spec: str) -> tuple[str, str | None]:
    """"runs/x@head.1" -> ("runs/x", "head.1"); no selector (or an existing path with "@") -> (spec, None)."""
    base, at, selector = spec.rpartition("@")
    if not at or Path(spec).exists():
        return spec, None
    return base, selector


def read_run_config(run_dir: Path) -> dict[str, Any]:
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise PretrainlabError(f"{run_dir} has no config.yaml; head layers need the run folder pre-training wrote")
    return yaml.safe_load(config_file.read_text()) or {}


def load_run_method(run_dir: Path) -> nn.Module:
    """Rebuilds a run's `Method` (heads included) from config.yaml and checkpoints/last.pt, in eval mode."""
    from pretrainlab.config import build_config
    from pretrainlab.methods import METHODS, MethodContext
    from pretrainlab.train.checkpoint import checkpoint_path

    values = read_run_config(run_dir)
    resolved = values.get("resolved", {})
    checkpoint = checkpoint_path(run_dir)
    if not checkpoint.is_file():
        raise PretrainlabError(f"{run_dir} has no checkpoints/last.pt; head layers are only in the full checkpoint")
    method_class = METHODS.get(values["method"])
    in_chans, img_size = int(resolved["in_chans"]), int(resolved["img_size"])
    context = MethodContext(img_size=img_size, in_chans=in_chans, mean=tuple(resolved["mean"]),
                            std=tuple(resolved["std"]), num_classes=int(resolved.get("num_classes", 0)),
                            dataset_size=int(resolved.get("train_images", 0)))
    method_config = build_config(method_class.config_class, values.get("method_options"), values["method"])
    method = method_class(create_backbone(values["backbone"], img_size, in_chans), method_config, context)
    state = load_torch_file(checkpoint, "checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("method"), dict):
        raise PretrainlabError(f"checkpoint {checkpoint} is not a pretrainlab checkpoint (no 'method' state)")
    try:
        method.load_state_dict(state["method"])
    except RuntimeError as error:
        raise PretrainlabError(f"checkpoint {checkpoint} does not fit the run's '{values['method']}' method "
                               f"({str(error).splitlines()[0][:120]})") from None
    return method.eval()


class MethodRepresentation(Backbone):
    """Fallback for a representation a method computes its own way: `pooled` = method.representations(x)[name]."""

    def __init__(self, method: nn.Module, name: str, out_dim: int) -> None:
        super().__init__(method.backbone.model, method.backbone.name, method.backbone.create_kwargs)
        self.method = method
        self.embed_dim = out_dim
        self.selector = name

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.representations(x)[self.selector]


def representation_names(method: nn.Module, img_size: int, in_chans: int) -> dict[str, int]:
    """{name: width} of every representation the method names, measured on a dummy batch in eval mode."""
    was_training = method.training
    method.eval()
    with torch.no_grad():
        named = method.representations(torch.zeros(2, in_chans, img_size, img_size))
    method.train(was_training)
    return {name: int(value.shape[-1]) for name, value in named.items()}


def select_from_method(method: nn.Module, selection: Selection, img_size: int, in_chans: int) -> Backbone:
    """The named representation of a rebuilt method as a `Backbone`; head.N keeps only the head's first layers."""
    names = representation_names(method, img_size, in_chans)
    if selection.name not in names:
        raise PretrainlabError(
            f"method '{method.name}' has no representation '{selection.name}'; it has {', '.join(names)}, "
            "and any run has dimD and (for ViTs) layerL,dimD")
    head = method.projection_head()
    index = selection.name.removeprefix("head.")
    if head is not None and selection.name.startswith("head.") and index.isdigit():
        return HeadBackbone(method.backbone, head.prefix(int(index)), names[selection.name], selection.name)
    return MethodRepresentation(method, selection.name, names[selection.name])


def select(backbone: Backbone, selection: Selection, run_dir: Path | None) -> Backbone:
    """Applies `selection` to `backbone` (which `load_target` loaded from the run or timm)."""
    if selection.nested:
        return NestedBackbone(backbone, selection.depth, selection.dim)
    if selection.name == "backbone":
        return backbone
    if run_dir is None:
        raise PretrainlabError(f"'@{selection.text}' needs a run folder (a timm model has no head); "
                               "timm:NAME takes only @dimD or @layerL,dimD")
    resolved = read_run_config(run_dir).get("resolved", {})
    method = load_run_method(run_dir)
    return select_from_method(method, selection, int(resolved["img_size"]), int(resolved["in_chans"]))


def fine_tune_selector(run_dir: Path) -> str:
    """The representation a run's method recommends fine-tuning from ("head.0" for SimCLRv2, else "backbone")."""
    from pretrainlab.config import build_config
    from pretrainlab.methods import METHODS

    values = read_run_config(Path(run_dir))
    config = build_config(METHODS.get(values["method"]).config_class, values.get("method_options"), values["method"])
    return str(getattr(config, "fine_tune_from", "backbone"))
