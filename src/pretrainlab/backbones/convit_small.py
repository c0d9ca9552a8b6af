"""ConViT (timm's own implementation) at the sizes of 32 px images.

d'Ascoli, Touvron, Leavitt, Morcos, Biroli, Sagun, "ConViT: Improving Vision Transformers with Soft
Convolutional Inductive Biases", arXiv 2103.10697. Gated positional self-attention (GPSA) layers start as
convolutions (each head attends to one offset around the query) and learn, through a gate per head, how much
to rely on content instead. timm's `convit_tiny` (5.7 M parameters) is the paper's smallest model; these entry
points build the same class with 4 px patches. timm's `embed_dim` is per head (the width is embed_dim * num_heads).
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from timm.models.convit import ConVit

from pretrainlab.backbones.model_api import drop_factory_kwargs


def _convit(**kwargs: Any) -> ConVit:
    return ConVit(**{"img_size": 32, "patch_size": 4, **drop_factory_kwargs(kwargs)})


@register_model
def test_convit(**kwargs: Any) -> ConVit:
    """A tiny ConViT for tests: two GPSA blocks, then one self-attention block."""
    return _convit(**{"embed_dim": 8, "depth": 3, "num_heads": 4, "local_up_to_layer": 2, "mlp_ratio": 2.0,
                      **kwargs})


@register_model
def convit_nano_patch4(**kwargs: Any) -> ConVit:
    """The size of vit_nano_patch4 (four heads of 32), three GPSA blocks then one self-attention block."""
    return _convit(**{"embed_dim": 32, "depth": 4, "num_heads": 4, "local_up_to_layer": 3, **kwargs})


@register_model
def convit_tiny_patch4(**kwargs: Any) -> ConVit:
    """ConViT-Ti's width and depth (ten GPSA blocks) with 4 px patches for CIFAR-sized images."""
    return _convit(**{"embed_dim": 48, "depth": 12, "num_heads": 4, "local_up_to_layer": 10, **kwargs})
