"""Losses in the sentence-transformers style: ``model`` first, dict of named parts, ``citation``."""

from ragcun.losses.epps_pulley import EppsPulley
from ragcun.losses.euclidean_mnrl import EuclideanMNRLoss, negative_l2_distance
from ragcun.losses.lejepa import CachedLeJEPALoss, LeJEPALoss
from ragcun.losses.mnrl_gor import MNRLGORLoss
from ragcun.losses.sigreg import SIGReg, SIGRegByRole, SIGRegLoss

__all__ = [
    "CachedLeJEPALoss",
    "EppsPulley",
    "EuclideanMNRLoss",
    "LeJEPALoss",
    "MNRLGORLoss",
    "SIGReg",
    "SIGRegByRole",
    "SIGRegLoss",
    "negative_l2_distance",
]
