"""Losses shared between methods: pure modules, shapes in docstrings, bad hyperparameters raise, and computed in
fp32 under autocast (`full_precision.in_full_precision`)."""

from pretrainlab.losses.barlow_twins import BarlowTwinsLoss
from pretrainlab.losses.cosine import NegativeCosineSimilarity
from pretrainlab.losses.dino import DINOLoss, TeacherCentre
from pretrainlab.losses.ibot import MaskedTokenDistillationLoss
from pretrainlab.losses.infonce import InfoNCELoss
from pretrainlab.losses.look import LeaveOneOutKNNLoss
from pretrainlab.losses.ntxent import NTXentLoss
from pretrainlab.losses.supcon import SupConLoss
from pretrainlab.losses.swav import SwAVLoss, sinkhorn_knopp
from pretrainlab.losses.vicreg import VICRegLoss

__all__ = [
    "BarlowTwinsLoss",
    "DINOLoss",
    "InfoNCELoss",
    "LeaveOneOutKNNLoss",
    "MaskedTokenDistillationLoss",
    "NegativeCosineSimilarity",
    "NTXentLoss",
    "SupConLoss",
    "SwAVLoss",
    "TeacherCentre",
    "VICRegLoss",
    "sinkhorn_knopp",
]
