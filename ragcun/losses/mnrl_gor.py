"""The alternative a sentence-transformers user would reach for: cosine MNRL + Global Orthogonal Regularization.

Not ragcun's method — its comparison point. Composed exactly as sentence-transformers'
``GlobalOrthogonalRegularizationLoss`` docstring shows (one forward, InfoNCE on the embeddings, GOR on the
same embeddings, a dict of named parts), so a comparison against LeJEPA changes only the objective.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    GlobalOrthogonalRegularizationLoss,
    MultipleNegativesRankingLoss,
)
from torch import Tensor, nn


class MNRLGORLoss(nn.Module):
    """``MultipleNegativesRankingLoss`` (cosine, ``scale``) + ``gor_weight`` × GOR (its mean and second-moment terms)."""

    def __init__(self, model: SentenceTransformer, scale: float = 20.0, gor_weight: float = 1.0) -> None:
        super().__init__()
        if gor_weight < 0:
            raise ValueError(f"gor_weight must be >= 0, got {gor_weight}.")
        self.model = model
        self.scale, self.gor_weight = scale, gor_weight
        self.contrastive = MultipleNegativesRankingLoss(model, scale=scale)
        self.gor = GlobalOrthogonalRegularizationLoss(model, mean_weight=gor_weight, second_moment_weight=gor_weight) \
            if gor_weight else None

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> dict[str, Tensor]:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        parts = {"contrastive": self.contrastive.compute_loss_from_embeddings(embeddings, labels)}
        if self.gor is not None:
            parts.update(self.gor.compute_loss_from_embeddings(embeddings))  # gor_mean, gor_second_moment
        return parts

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "gor_weight": self.gor_weight, "similarity_fct": "cos_sim"}

    @property
    def citation(self) -> str:
        return self.contrastive.citation + """
@inproceedings{zhang2017learning,
    title={Learning Spread-out Local Feature Descriptors},
    author={Zhang, Xu and Yu, Felix X. and Kumar, Sanjiv and Chang, Shih-Fu},
    booktitle={ICCV},
    year={2017}
}
"""
