"""Projection, prediction and decoder heads shared between methods."""

from pretrainlab.heads.dino import DINOHead, NormalizedLinear
from pretrainlab.heads.pos_embed import sincos_2d
from pretrainlab.heads.projection import ProjectionHead
from pretrainlab.heads.prototypes import Prototypes
from pretrainlab.heads.token_decoder import TokenDecoder

__all__ = ["DINOHead", "NormalizedLinear", "ProjectionHead", "Prototypes", "TokenDecoder", "sincos_2d"]
