"""create_backbone: timm models by name, with a fair random init and clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file

import pretrainlab.backbones.lowrank  # noqa: F401  (registers pela_lowrank, the low-rank version of any model)
import pretrainlab.backbones.paper_architectures  # noqa: F401  (registers the papers' architectures)
import pretrainlab.backbones.small  # noqa: F401  (registers the small-image models in timm)
import pretrainlab.backbones.token_vit  # noqa: F401  (registers the token-input ViTs)
from pretrainlab.atomic import atomic_path
from pretrainlab.backbones.adapter import Backbone
from pretrainlab.errors import PretrainlabError, UnknownNameError
from pretrainlab.safe_files import load_safetensors, load_state_dict_file, safetensors_metadata

# Keyword arguments only some timm models accept: tried first, dropped when the model refuses them.
# zero_init_last=False: timm ResNets otherwise zero the last norm of every block, which makes an
# untrained network's features nearly identical for all images (DESIGN.md, evaluation conventions).
OPTIONAL_KWARGS = ("img_size", "zero_init_last")


def backbone_names() -> list[str]:
    return sorted(timm.list_models())


def _instantiate(name: str, kwargs: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    kwargs = dict(kwargs)
    while True:
        try:
            return timm.create_model(name, pretrained=False, **kwargs), kwargs
        except TypeError as error:
            refused = [key for key in OPTIONAL_KWARGS if key in kwargs and key in str(error)]
            if not refused:
                raise
            for key in refused:
                kwargs.pop(key)


def create_backbone(name: str, img_size: int, in_chans: int, check: bool = True, **extra: Any) -> Backbone:
    """Creates timm model `name` for `in_chans`-channel `img_size` px images, wrapped as a `Backbone`.

    Raises PretrainlabError when the name is unknown or the model cannot take that image size.
    """
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, backbone_names(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(
            f"unknown backbone '{name}'{hint} `pretrainlab list backbones` shows all {len(backbone_names())}"
            " valid names; small-image ones: tinycnn, resnet18_cifar, vit_nano_patch4, vit_tiny_patch4"
        )
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans, "img_size": img_size, "zero_init_last": False}
    kwargs.update(extra)
    try:
        model, used = _instantiate(name, kwargs)
    except ValueError as error:  # the architecture refuses this size or option (e.g. not a multiple of its patch)
        raise PretrainlabError(f"backbone '{name}' cannot be built for {img_size}x{img_size} images with "
                               f"{in_chans} channels: {str(error).strip().splitlines()[0]}") from None
    except TypeError as error:  # an option the model does not take (--backbone-option)
        raise PretrainlabError(f"backbone '{name}' does not take the options {sorted(extra)}: "
                               f"{str(error).strip().splitlines()[0]}") from None
    backbone = Backbone(model, name, used)
    if check:
        check_image_size(backbone, img_size, in_chans)
    return backbone


def check_image_size(backbone: Backbone, img_size: int, in_chans: int) -> None:
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone.pooled(torch.zeros(1, in_chans, img_size, img_size))
    except (RuntimeError, AssertionError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PretrainlabError(
            f"backbone '{backbone.name}' cannot take {img_size}x{img_size} images with {in_chans} channels "
            f"({first_line}); try another --img-size or a small-image backbone such as resnet18_cifar"
        ) from None
    finally:
        backbone.train(was_training)


def save_backbone(backbone: Backbone, path: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """Writes the timm model's weights as safetensors, with the name and kwargs that recreate it.

    `state`: the timm model's full state dict when the module itself holds only a shard of it (fsdp).
    """
    state = backbone.model.state_dict() if state is None else state
    state = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    metadata = {"timm_name": backbone.name, "create_kwargs": json.dumps(backbone.create_kwargs),
                "format": "pretrainlab-backbone-1"}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def read_backbone_metadata(path: Path) -> dict[str, Any]:
    metadata = safetensors_metadata(path, "backbone file")
    if "timm_name" not in metadata:
        raise PretrainlabError(f"{path} has no pretrainlab metadata (timm_name); pass the backbone name instead")
    try:
        create_kwargs = json.loads(metadata.get("create_kwargs", "{}"))
    except ValueError:
        raise PretrainlabError(f"{path} has damaged pretrainlab metadata (create_kwargs is not JSON)") from None
    return {"name": metadata["timm_name"], "create_kwargs": create_kwargs}


def load_backbone(path: Path) -> Backbone:
    """Recreates an exported backbone from its safetensors file alone."""
    meta = read_backbone_metadata(path)
    kwargs = dict(meta["create_kwargs"])
    img_size = kwargs.pop("img_size", 224)
    in_chans = kwargs.pop("in_chans", 3)
    kwargs.pop("num_classes", None)
    backbone = create_backbone(meta["name"], img_size, in_chans, check=False, **kwargs)
    try:
        backbone.model.load_state_dict(load_safetensors(path, "backbone file"))
    except RuntimeError as error:
        raise PretrainlabError(f"backbone file {path} does not fit the '{meta['name']}' its metadata names "
                               f"({str(error).splitlines()[0][:120]})") from None
    return backbone


def load_weights_file(backbone: Backbone, path: Path, what: str = "weights file") -> None:
    """Loads a safetensors or torch checkpoint into `backbone`, ignoring classifier weights."""
    state = load_state_dict_file(path, what)
    if isinstance(state, dict) and path.suffix != ".safetensors":
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict):
        raise PretrainlabError(f"{what} {path} holds a {type(state).__name__}, not a state dict of tensors")
    own = backbone.model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(matched) < 0.9 * len(own):
        raise PretrainlabError(
            f"{path} matches only {len(matched)} of {len(own)} tensors of backbone '{backbone.name}' "
            "(wrong architecture, image size or channel count?)"
        )
    backbone.model.load_state_dict(matched, strict=False)
