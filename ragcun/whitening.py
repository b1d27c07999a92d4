"""PCA whitening and its relatives, fitted on a cloud of embeddings: the one home of principal axes and their floor.

Each map here is x ↦ W (x − mean) along the cloud's principal axes, every axis scaled by eigenvalue^(−γ/2), then all
by one factor to unit average variance. γ 0 keeps the base's geometry (one scale: init ``scaled``), γ 1 is full
whitening (N(0, I) on the data it was fitted on: init ``whiten``, the reports' ``--whiten``, the isotropic head);
between them the spectrum is compressed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

# The one eigenvalue floor (an eigenvalue is the variance along its axis; init ``mrl`` floors per-coordinate variances
# with it too), relative to the largest. A direction below it is treated as constant: scaled by at most 1e4 times the
# largest direction's factor, it starts near 0 instead of blown up (all-MiniLM-L6-v2 has three coordinates constant
# to 1e-32, which unfloored get weights near 1e12 and a first training loss of 1e6). Why 1e-8: on 3,000 SciFact
# documents all-MiniLM-L6-v2's constant directions come out of the eigendecomposition at round-off (±1e-16 of the
# largest) and its smallest real one at 3e-4, so 1e-8 is many orders from both: it floors only what never varies.
VARIANCE_FLOOR = 1e-8


def floor_variances(variances: np.ndarray) -> np.ndarray:
    """``variances`` raised to at least ``VARIANCE_FLOOR`` times the largest: no scale by 1/√variance explodes."""
    largest = variances.max()
    if not largest > 0:
        raise ValueError("The embeddings do not vary along any direction, so there is no variance to scale by: "
                         "fit on varied texts.")
    return np.maximum(variances, largest * VARIANCE_FLOOR)


class PrincipalAxes(NamedTuple):
    """A cloud's mean and its covariance's eigendecomposition, fitted once and shared by every γ and head built on it."""

    mean: np.ndarray
    eigenvalues: np.ndarray  # descending (the top axes first), floored by floor_variances
    vectors: np.ndarray  # the eigenvectors, as columns in the eigenvalues' order


def principal_axes(train: np.ndarray) -> PrincipalAxes:
    """The training embeddings' principal axes (one D x D eigendecomposition), largest variance first."""
    x = np.asarray(train, dtype=np.float64)
    eigenvalues, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    eigenvalues, vectors = floor_variances(eigenvalues[::-1].copy()), np.ascontiguousarray(vectors[:, ::-1])
    return PrincipalAxes(x.mean(axis=0), eigenvalues, vectors)


def tempered_whitening(axes: PrincipalAxes, gamma: float, output_dim: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """x ↦ W (x − mean): PCA axes scaled by eigenvalue^(−γ/2), then all by one factor to unit average variance.

    With ``output_dim`` only the top principal axes are kept (the projection, not rotated back, largest variance
    first), so coordinates the base never varies (MiniLM has 3) are dropped instead of kept at variance 0.
    """
    eigenvalues, vectors = axes.eigenvalues, axes.vectors
    if output_dim is not None:
        eigenvalues, vectors = eigenvalues[:output_dim], vectors[:, :output_dim]
    scales = eigenvalues ** (-gamma / 2)
    scales /= np.sqrt((eigenvalues * scales**2).mean())
    # Full width: rotate back (L2 distances do not depend on the rotation); below it, the kept axes themselves.
    weight = (vectors * scales) @ vectors.T if output_dim is None else (vectors * scales).T
    # Row-major, as a saved model reloads it: a transposed layout takes another matmul path and other roundings.
    weight = np.ascontiguousarray(weight)
    return torch.from_numpy(weight).float(), torch.from_numpy(-weight @ axes.mean).float()


def unit_variance_scale(embeddings: np.ndarray, output_dim: int) -> float:
    """γ 0's single factor: unit average variance over the ``output_dim`` directions kept (all coordinates at full
    width, else the top principal axes). Init ``scaled`` multiplies by it, and training scales the base by it."""
    x = np.asarray(embeddings, dtype=np.float64)
    if output_dim >= x.shape[1]:
        return float(1.0 / np.sqrt(x.var(axis=0, ddof=1).mean()))  # the covariance's trace: no eigendecomposition
    return float(1.0 / np.sqrt(principal_axes(x).eigenvalues[:output_dim].mean()))


def whitening_dense(embeddings: np.ndarray, output_dim: int | None = None, axes: PrincipalAxes | None = None):
    """A standard ``Dense`` that maps ``embeddings`` to N(0, I) exactly (on them): full PCA whitening onto the top
    ``output_dim`` principal axes (all by default), weight Λ^(−½) Uᵀ and bias −W μ, so a saved model holding it
    loads with plain sentence-transformers. It needs more texts than its width (a covariance fitted on fewer is
    singular: some directions would get no variance at all). ``axes``: :func:`principal_axes` of ``embeddings``,
    where the caller has them already."""
    from sentence_transformers.sentence_transformer.modules import Dense
    from torch import nn

    count, width = embeddings.shape
    output_dim = width if output_dim is None else output_dim
    if output_dim > width:
        raise ValueError(f"A whitening to {output_dim} directions needs embeddings at least that wide; these are "
                         f"{width}-d. Lower the output width to at most {width}.")
    if count <= output_dim:
        raise ValueError(f"The whitening is fitted on {count} texts, but its {output_dim} output directions need more "
                         f"than {output_dim}: encode more texts (every source, both roles) or lower the output width.")
    axes = principal_axes(embeddings) if axes is None else axes
    weight, bias = tempered_whitening(axes, 1.0, output_dim if output_dim < width else None)
    return Dense(width, output_dim, bias=True, activation_function=nn.Identity(), init_weight=weight, init_bias=bias)
