"""PCA whitening with tempered eigenvalues: the post-hoc shape a user gets for free, and the isotropic head's base.

γ 0 keeps the base's geometry (one scale), γ 1 is full whitening (N(0, I) on the data it was fitted on); between
them the spectrum is compressed by eigenvalue^(−γ/2).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class PrincipalAxes(NamedTuple):
    """A cloud's mean and its covariance's eigendecomposition, fitted once and shared by every γ and head built on it."""

    mean: np.ndarray
    eigenvalues: np.ndarray  # ascending; constant coordinates clipped to a tiny positive floor
    vectors: np.ndarray  # the eigenvectors, as columns in the eigenvalues' order


def principal_axes(train: np.ndarray) -> PrincipalAxes:
    """The training embeddings' principal axes (one D x D eigendecomposition)."""
    eigenvalues, vectors = np.linalg.eigh(np.cov(train, rowvar=False))
    eigenvalues = np.clip(eigenvalues, eigenvalues.max() * 1e-6, None)  # constant coordinates stay (almost) 0
    return PrincipalAxes(train.mean(axis=0), eigenvalues, vectors)


def tempered_whitening(axes: PrincipalAxes, gamma: float, output_dim: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """x ↦ W (x − mean): PCA axes scaled by eigenvalue^(−γ/2), then all by one factor to unit average variance.

    With ``output_dim`` only the top principal axes are kept (the projection, not rotated back), so coordinates the
    base never varies (MiniLM has 3) are dropped instead of kept at variance 0.
    """
    eigenvalues, vectors = axes.eigenvalues, axes.vectors
    if output_dim is not None:
        eigenvalues, vectors = eigenvalues[-output_dim:], vectors[:, -output_dim:]
    scales = eigenvalues ** (-gamma / 2)
    scales /= np.sqrt((eigenvalues * scales**2).mean())
    # Full width: rotate back (L2 distances do not depend on the rotation); below it, the kept axes themselves.
    weight = (vectors * scales) @ vectors.T if output_dim is None else (vectors * scales).T
    return torch.from_numpy(weight).float(), torch.from_numpy(-weight @ axes.mean).float()
