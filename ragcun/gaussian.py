"""How close would an unrelated document be? The null distributions behind a hit's p-value.

A hit's p-value is the probability that a document unrelated to the query would be at least as close. Two nulls:

- **global**: query and document independent N(0, I_D), as a ragcun model's embeddings of all text should be. Then
  q − d ~ N(0, 2I) and ‖q − d‖²/2 ~ χ²_D (and a single embedding's norm ‖z‖ ~ χ_D: :func:`chi_moments`).
- **corpus**: a document drawn from *this* corpus, independent of the query. One corpus is one domain, and a domain
  is a sub-population: if all text were N(0, I), one domain's documents would still sit off-centre with a smaller
  spread (law of total covariance), so under the global null nearly every in-domain pair looks "closer than
  chance". The corpus null models the documents as N(μ, σ² I) with the corpus's own mean μ and average
  per-dimension variance σ², and conditions on the query: q − d ~ N(q − μ, σ² I), so
  ‖q − d‖²/σ² ~ non-central χ²_D with non-centrality ‖q − μ‖²/σ². For every query, about 1% of the corpus's
  unrelated documents then pass ``p < 0.01``, whatever the model's global geometry — so it also applies to a
  cosine model's unit vectors. A shift and one scale leave every L2 ranking unchanged: only the p-values move.

:class:`CorpusNull` keeps exact running sums (Σd, Σ‖d‖²), so adding and removing documents refreshes μ and σ² at
once, without a refit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import chi, chi2, ncx2

__all__ = ["CALIBRATIONS", "CorpusNull", "chi_moments", "distance_pvalue"]

CALIBRATIONS: tuple[str, ...] = ("corpus", "global")
# Fewer documents than this and the corpus null is not used (the global one is, with a warning). The mean's error
# adds about D/N to the expected non-centrality, which is itself about D for an unrelated query: 1% at N = 100.
DEFAULT_MIN_DOCUMENTS = 100


def distance_pvalue(distance: float | np.ndarray, dim: int) -> float | np.ndarray:
    """P(‖q − d‖ <= distance) for independent q, d ~ N(0, I_dim): the global null.

    Uses ‖q − d‖²/2 ~ χ²_dim (q − d ~ N(0, 2I)). scipy's χ² CDF is the regularized lower incomplete gamma function,
    computed directly (not as 1 − survival), so tiny p-values keep their relative precision down to ~1e-300 and then
    underflow to exactly 0.
    """
    value = chi2.cdf(np.square(np.asarray(distance, dtype=np.float64)) / 2.0, df=dim)
    return float(value) if np.ndim(value) == 0 else value


def chi_moments(dim: int) -> tuple[float, float]:
    """Mean and standard deviation of ‖z‖ for z ~ N(0, I_dim) (the χ distribution): the target of embedding norms.

    scipy's χ mean goes through the Pochhammer symbol Γ(D/2 + 1/2)/Γ(D/2), which neither overflows nor loses the
    variance D − mean² to cancellation at large D; a negative rounding residue is clamped to 0.
    """
    mean, variance = chi.stats(dim, moments="mv")
    return float(mean), float(np.sqrt(max(float(variance), 0.0)))


class CorpusNull:
    """The corpus's location μ and scale σ² (mean per-dimension variance), kept as exact running sums."""

    def __init__(self, dim: int, min_documents: int = DEFAULT_MIN_DOCUMENTS) -> None:
        self.dim = int(dim)
        self.min_documents = int(min_documents)
        self.count = 0
        self._sum = np.zeros(self.dim, dtype=np.float64)
        self._sum_squares = 0.0

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float64)
        self.count += len(vectors)
        self._sum += vectors.sum(axis=0)
        self._sum_squares += float(np.einsum("ij,ij->", vectors, vectors))

    def remove(self, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float64)
        self.count -= len(vectors)
        self._sum -= vectors.sum(axis=0)
        self._sum_squares -= float(np.einsum("ij,ij->", vectors, vectors))
        if self.count == 0:  # no rounding residue survives an emptied corpus
            self._sum[:] = 0.0
            self._sum_squares = 0.0

    @property
    def fitted(self) -> bool:
        """Enough documents to use the corpus null (``min_documents``), and a spread to scale by."""
        return self.count >= max(2, self.min_documents) and self.variance > 0

    @property
    def location(self) -> np.ndarray:
        return self._sum / max(self.count, 1)

    @property
    def variance(self) -> float:
        """σ²: the unbiased per-dimension variance, averaged over the dimensions."""
        if self.count < 2:
            return float("nan")
        centred = self._sum_squares - self.count * float(self.location @ self.location)
        return max(centred, 0.0) / ((self.count - 1) * self.dim)

    def pvalues(self, distances: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """P(‖q − d‖ <= distance) for d ~ N(μ, σ² I) independent of q; one query per row of ``distances``."""
        variance = self.variance
        offsets = np.asarray(queries, dtype=np.float64) - self.location
        noncentrality = np.einsum("ij,ij->i", offsets, offsets) / variance
        squared = np.square(np.asarray(distances, dtype=np.float64)) / variance
        return ncx2.cdf(squared, df=self.dim, nc=noncentrality[:, None])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the sums themselves, so a reloaded index keeps updating exactly."""
        return {"count": self.count, "sum": self._sum.tolist(), "sum_squares": self._sum_squares,
                "location_norm": float(np.linalg.norm(self.location)), "variance": self.variance if self.count > 1 else None}  # fmt: skip

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], dim: int, min_documents: int) -> CorpusNull:
        null = cls(dim, min_documents)
        total = np.asarray(state["sum"], dtype=np.float64)
        if total.shape != (null.dim,):
            raise ValueError(f"the saved corpus calibration has {total.size} dimensions, the index {null.dim}")
        null.count, null._sum, null._sum_squares = int(state["count"]), total, float(state["sum_squares"])
        return null
