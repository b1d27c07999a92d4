"""ragcun: sentence embeddings fine-tuned to an isotropic Gaussian N(0, I), retrieved by L2 distance."""

from ragcun.isotropy import isotropy_report
from ragcun.losses import CachedLeJEPALoss, EppsPulley, EuclideanMNRLoss, LeJEPALoss, SIGReg, SIGRegLoss
from ragcun.model import DEFAULT_BASE_MODEL, build_model, fit_projection
from ragcun.retrieval.retriever import GaussianRetriever, Hit
from ragcun.training.api import train, train_head

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_MODEL",
    "CachedLeJEPALoss",
    "EppsPulley",
    "EuclideanMNRLoss",
    "GaussianRetriever",
    "Hit",
    "LeJEPALoss",
    "SIGReg",
    "SIGRegLoss",
    "build_model",
    "fit_projection",
    "isotropy_report",
    "train",
    "train_head",
]
