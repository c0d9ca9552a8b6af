"""Export one representation of a run (`pretrainlab export RUN@head.0 --out FILE`) and load it back.

The file is one safetensors: the timm model's tensors under their usual names (timm loads them with
strict=False), the kept projection-head layers under `pretrainlab_head.`, and the selection in the
metadata, so `pretrainlab eval FILE` measures exactly what `pretrainlab eval RUN@head.0` measures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn as nn
from safetensors.torch import save_file

from pretrainlab.atomic import atomic_path
from pretrainlab.backbones import Backbone, create_backbone
from pretrainlab.backbones.selected import HeadBackbone
from pretrainlab.errors import PretrainlabError
from pretrainlab.eval.representation import MethodRepresentation, parse_selector, select, split_spec
from pretrainlab.safe_files import load_safetensors, safetensors_metadata

EXPORT_FORMAT = "pretrainlab-representation-1"
HEAD_PREFIX = "pretrainlab_head."  # head tensors in an export; never a timm key, so timm loads the rest


def describe_layers(module: nn.Module) -> list[dict[str, Any]]:
    """A JSON description of a Sequential of Linear / BatchNorm1d / ReLU layers (what projection heads hold)."""
    layers = []
    for layer in module.children() if isinstance(module, nn.Sequential) else [module]:
        if isinstance(layer, nn.Linear):
            layers.append({"type": "linear", "in": layer.in_features, "out": layer.out_features,
                           "bias": layer.bias is not None})
        elif isinstance(layer, nn.BatchNorm1d):
            layers.append({"type": "batch_norm", "features": layer.num_features, "affine": layer.affine})
        elif isinstance(layer, nn.ReLU):
            layers.append({"type": "relu"})
        else:
            raise PretrainlabError(f"cannot export a head layer of type {type(layer).__name__}")
    return layers


def build_layers(description: list[dict[str, Any]]) -> nn.Sequential:
    builders = {
        "linear": lambda d: nn.Linear(d["in"], d["out"], bias=d["bias"]),
        "batch_norm": lambda d: nn.BatchNorm1d(d["features"], affine=d["affine"]),
        "relu": lambda d: nn.ReLU(),
    }
    return nn.Sequential(*(builders[entry["type"]](entry) for entry in description))


def export_representation(backbone: Backbone, path: Path, img_size: int, mean: Any = None, std: Any = None) -> None:
    """Writes a selected representation as one safetensors file that `load_exported` rebuilds.

    The timm model's tensors keep their names (timm loads them with strict=False, ignoring the head);
    head layers are stored under `pretrainlab_head.`; the selection is in the metadata.
    """
    if isinstance(backbone, MethodRepresentation):
        raise PretrainlabError(f"'{backbone.selector}' is computed by the whole method and cannot be exported alone")
    state = {key: value.detach().contiguous().cpu() for key, value in backbone.model.state_dict().items()}
    metadata = {"format": EXPORT_FORMAT, "timm_name": backbone.name,
                "create_kwargs": json.dumps(backbone.create_kwargs), "img_size": str(img_size),
                "mean": json.dumps(list(mean) if mean else None),
                "std": json.dumps(list(std) if std else None), "selector": getattr(backbone, "selector", "backbone")}
    if isinstance(backbone, HeadBackbone):
        metadata["head"] = json.dumps(describe_layers(backbone.head))
        metadata["out_dim"] = str(backbone.embed_dim)
        state.update({HEAD_PREFIX + key: value.detach().contiguous().cpu()
                      for key, value in backbone.head.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def exported_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a representation export, or None for any other safetensors file."""
    metadata = safetensors_metadata(path, "exported file")
    return metadata if metadata.get("format") == EXPORT_FORMAT else None


def load_exported(path: Path) -> tuple[Backbone, dict[str, Any]]:
    """Rebuilds an `export_representation` file -> (backbone, {"img_size", "mean", "std"})."""
    metadata = exported_metadata(path)
    if metadata is None:
        raise PretrainlabError(f"{path} is not a pretrainlab representation export")
    kwargs = json.loads(metadata["create_kwargs"])
    img_size, in_chans = kwargs.pop("img_size", int(metadata["img_size"])), kwargs.pop("in_chans", 3)
    kwargs.pop("num_classes", None)
    backbone = create_backbone(metadata["timm_name"], img_size, in_chans, check=False, **kwargs)
    tensors = load_safetensors(path, "exported file")
    backbone.model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)})
    if "head" in metadata:
        head = build_layers(json.loads(metadata["head"]))
        head.load_state_dict({k.removeprefix(HEAD_PREFIX): v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)})
        selected: Backbone = HeadBackbone(backbone, head, int(metadata["out_dim"]), metadata["selector"])
    else:
        selected = select(backbone, parse_selector(metadata["selector"]), None)
    info = {"img_size": int(metadata["img_size"]), "mean": json.loads(metadata["mean"]),
            "std": json.loads(metadata["std"])}
    return selected.eval(), info


def export_spec(spec: str, out: Path) -> dict[str, Any]:
    """`pretrainlab export RUN[@SELECTOR] --out FILE`: writes that representation of a run folder.

    Returns {"out", "selector", "embed_dim"}. `pretrainlab eval FILE` (or `load_target`) evaluates the file.
    """
    from pretrainlab.eval.target import load_target  # target.py imports this module

    base, _ = split_spec(spec)
    if not Path(base).is_dir():
        raise PretrainlabError(f"export needs a run folder (optionally RUN@head.N or RUN@dimD), got '{spec}'")
    target = load_target(spec, img_size=0, in_chans=0)  # a run folder carries its own size and channels
    export_representation(target.backbone, Path(out), target.img_size, target.mean, target.std)
    return {"out": str(out), "selector": getattr(target.backbone, "selector", "backbone"),
            "embed_dim": target.backbone.embed_dim}
