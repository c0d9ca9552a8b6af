"""Losses shared between methods: pure modules, shapes in docstrings, bad hyperparameters raise."""

from pretrainlab.losses.cosine import NegativeCosineSimilarity
from pretrainlab.losses.dino import DINOLoss, TeacherCentre
from pretrainlab.losses.ibot import MaskedTokenDistillationLoss
from pretrainlab.losses.infonce import InfoNCELoss
from pretrainlab.losses.ntxent import NTXentLoss

__all__ = [
    "DINOLoss",
    "InfoNCELoss",
    "MaskedTokenDistillationLoss",
    "NegativeCosineSimilarity",
    "NTXentLoss",
    "TeacherCentre",
]
