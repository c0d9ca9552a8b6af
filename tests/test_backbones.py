"""Registry-driven backbone checks, fair random init, export that loads with timm alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrainlab.backbones import create_backbone, load_backbone, save_backbone
from pretrainlab.backbones.small import SMALL_BACKBONES
from pretrainlab.errors import PretrainlabError, UnknownNameError

TIMM_SAMPLES = ("resnet18", "test_convnext", "test_vit")


@pytest.mark.parametrize("name", [n for n in SMALL_BACKBONES if not n.startswith(("vit_small", "resnet50"))]
                         + list(TIMM_SAMPLES))
def test_backbone_interface(name: str) -> None:
    size = 64 if name.startswith("test_") else 32
    backbone = create_backbone(name, size, 3).eval()
    x = torch.randn(2, 3, size, size)
    pooled = backbone.pooled(x)
    assert pooled.shape == (2, backbone.embed_dim)
    maps = backbone.feature_maps(x)
    assert maps and all(m.ndim == 4 and m.shape[0] == 2 for m in maps)
    if backbone.has_tokens:
        tokens = backbone.tokens(x)
        assert tokens.ndim == 3 and tokens.shape[-1] == backbone.embed_dim
        assert backbone.patch_tokens(x).shape[1] == backbone.grid_size[0] * backbone.grid_size[1]
    else:
        with pytest.raises(TypeError):
            backbone.tokens(x)


def test_random_resnet_is_not_degenerate() -> None:
    backbone = create_backbone("resnet18_cifar", 32, 3).eval()
    features = backbone.pooled(torch.rand(8, 3, 32, 32))
    spread = features.std(dim=0).mean() / features.abs().mean()
    assert spread > 0.05, "zero_init_last would make random features almost identical"


def test_unknown_backbone_and_bad_size() -> None:
    with pytest.raises(UnknownNameError, match="resnet18"):
        create_backbone("resnt18", 32, 3)
    with pytest.raises(PretrainlabError, match="cannot take"):
        create_backbone("test_convnext", 16, 3)


def test_export_loads_into_timm_without_pretrainlab(tmp_path: Path) -> None:
    backbone = create_backbone("resnet18", 32, 1)
    path = tmp_path / "backbone.safetensors"
    save_backbone(backbone, path)
    script = (
        "import json, sys, timm, torch\n"
        "from safetensors import safe_open\n"
        "from safetensors.torch import load_file\n"
        f"path = {str(path)!r}\n"
        "meta = safe_open(path, 'pt').metadata()\n"
        "model = timm.create_model(meta['timm_name'], **json.loads(meta['create_kwargs']))\n"
        "model.load_state_dict(load_file(path))\n"
        "model.eval()\n"
        "assert 'pretrainlab' not in sys.modules\n"
        "print(model(torch.zeros(1, 1, 32, 32)).shape[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "512"


def test_export_roundtrip_of_a_small_backbone(tmp_path: Path) -> None:
    backbone = create_backbone("vit_nano_patch4", 32, 3).eval()
    save_backbone(backbone, tmp_path / "b.safetensors")
    loaded = load_backbone(tmp_path / "b.safetensors").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.pooled(x), backbone.pooled(x))
