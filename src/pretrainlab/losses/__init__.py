"""Losses shared between methods: pure modules, shapes in docstrings, bad hyperparameters raise."""

from pretrainlab.losses.ntxent import NTXentLoss

__all__ = ["NTXentLoss"]
