"""Backbones: the timm adapter and the small-image architectures registered into timm."""

from pretrainlab.backbones.adapter import Backbone
from pretrainlab.backbones.factory import (
    backbone_names,
    create_backbone,
    load_backbone,
    load_weights_file,
    save_backbone,
)

__all__ = ["Backbone", "backbone_names", "create_backbone", "load_backbone", "load_weights_file", "save_backbone"]
