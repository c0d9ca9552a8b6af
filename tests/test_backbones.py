"""Registry-driven backbone checks, fair random init, export that loads with timm alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrainlab.backbones import create_backbone, load_backbone, save_backbone
from pretrainlab.backbones.small import SMALL_BACKBONES
from pretrainlab.backbones.token_vit import TOKEN_BACKBONES
from pretrainlab.data.tokens.token_file import codes_as_images
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


@pytest.mark.parametrize("name", TOKEN_BACKBONES[:2])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_token_backbone_interface_on_code_bytes(name: str, in_chans: int) -> None:
    """Token ViTs take code grids as bytes (1 channel: the code; 3: high byte, low byte, 0), refuse pixels, and
    export with their codebook size and tokenizer id."""
    size = 256 if in_chans == 1 else 600
    backbone = create_backbone(name, 8, in_chans, codebook_size=size, tokenizer="abc").eval()
    codes = torch.randint(0, size, (2, 8, 8))
    x = torch.from_numpy(codes_as_images(codes.numpy(), size)).permute(0, 3, 1, 2).float()
    assert backbone.pooled(x).shape == (2, backbone.embed_dim)
    assert all(m.shape[-2:] == (8, 8) for m in backbone.feature_maps(x))
    assert backbone.patch_tokens(x).shape[1] == 64 and backbone.grid_size == (8, 8)
    with pytest.raises(ValueError, match="not pixels"):
        backbone.pooled(torch.randn(2, in_chans, 8, 8))
    if in_chans == 1:
        with pytest.raises(ValueError, match="outside"):
            backbone.pooled(torch.full((1, 1, 8, 8), float(size)))


def test_token_backbone_export_keeps_its_tokenizer(tmp_path: Path) -> None:
    backbone = create_backbone("test_vit_token", 7, 1, codebook_size=64, tokenizer="abc").eval()
    save_backbone(backbone, tmp_path / "t.safetensors")
    loaded = load_backbone(tmp_path / "t.safetensors").eval()
    assert loaded.model.codebook_size == 64 and loaded.model.tokenizer == "abc"
    x = torch.randint(0, 64, (2, 1, 7, 7)).float()
    torch.testing.assert_close(loaded.pooled(x), backbone.pooled(x))


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
