"""Registry-driven checks of the papers' architectures, like timm's test_models.py.

Every architecture file registers a tiny `test_*` model; each one gets the whole timm interface at 32 px with
1 and 3 channels, the `Backbone` contract, and an export that reloads into plain timm with identical outputs.
Every other registered variant is built on the meta device (no memory, no compute). Adding an architecture
adds no code here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pretrainlab.backbones import create_backbone, save_backbone
from pretrainlab.backbones.model_api import drive_schedules
from pretrainlab.backbones.paper_architectures import paper_backbones
from pretrainlab.backbones.paper_architectures import test_backbones as tiny_backbones

TEST_MODELS = tiny_backbones()
VARIANTS = [name for name in paper_backbones() if name not in TEST_MODELS]
# The parameter counts the papers report (with the 1000-class classifier), in millions.
PAPER_PARAMETERS = {"moat_0": 27.8, "tiny_moat_0": 3.4, "raftmlp_s": 9.9, "illama_tiny_patch16_224": 5.7,
                    "resnet50_ibn_a": 25.6, "resnet18_ibn_a": 11.7}


def test_every_architecture_has_a_test_model() -> None:
    modules = {timm.models.model_entrypoint(name).__module__ for name in paper_backbones()}
    covered = {timm.models.model_entrypoint(name).__module__ for name in TEST_MODELS}
    assert modules == covered and len(TEST_MODELS) >= 9


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", TEST_MODELS)
def test_timm_interface(name: str, in_chans: int) -> None:
    model = timm.create_model(name, num_classes=5, in_chans=in_chans)
    drive_schedules(model, 0.05)  # mid-schedule: every branch (LayerNorm and RepBN, soft mask) takes part
    x = torch.randn(2, in_chans, 32, 32)
    logits = model.train()(x)
    assert logits.shape == (2, 5)
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(features), model(x))
        maps = model.forward_intermediates(x, intermediates_only=True)
        assert maps and all(m.ndim == 4 and m.shape[0] == 2 for m in maps)
        final, again = model.forward_intermediates(x)
        torch.testing.assert_close(final, features)
        assert [m.shape for m in again] == [m.shape for m in maps]
        last = model.forward_intermediates(x, indices=1, intermediates_only=True)
        assert len(last) == 1 and last[0].shape == maps[-1].shape


@pytest.mark.parametrize("name", TEST_MODELS)
def test_backbone_contract_and_export_into_plain_timm(name: str, tmp_path: Path) -> None:
    backbone = create_backbone(name, 32, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = backbone.pooled(x)
        assert pooled.shape == (2, backbone.embed_dim)
        assert all(m.ndim == 4 for m in backbone.feature_maps(x))
        if backbone.has_tokens:
            tokens = backbone.tokens(x)
            assert tokens.shape[-1] == backbone.embed_dim
            assert backbone.patch_tokens(x).shape[1] == backbone.grid_size[0] * backbone.grid_size[1]
        else:
            with pytest.raises(TypeError):
                backbone.tokens(x)
    path = tmp_path / "backbone.safetensors"
    save_backbone(backbone, path)
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    plain = timm.create_model(metadata["timm_name"], **json.loads(metadata["create_kwargs"]))
    plain.load_state_dict(load_file(str(path)))  # strict: the same keys and shapes
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), backbone.model(x))


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_builds(name: str) -> None:
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=1000, in_chans=3)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    assert model.num_features > 0 and parameters > 0.1
    if name in PAPER_PARAMETERS:
        assert parameters == pytest.approx(PAPER_PARAMETERS[name], rel=0.03)
