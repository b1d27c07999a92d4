"""Is a cloud Gaussian, beyond its first two moments? The marginal and radial tests behind ``is_gaussian``.

``is_isotropic`` judges the mean and the covariance only, and whitening makes those exact while saying nothing of the
shape: uniform coordinates scaled to unit variance, or two clusters whitened together, are perfectly isotropic. The
χ² p-values and a fixed int8 range assume more: Gaussian marginals and norms that follow χ_D. Three figures look at
that, each judged against what N(0, I) samples of the same N and D give:

- **random slices** (``sigreg``): the mean Epps–Pulley statistic of random 1-D projections. In high dimension random
  projections look Gaussian by the central limit theorem whatever the coordinates do, so this alone is weak;
- **marginals**: the statistic along chosen directions, each standardized by its own mean and spread, and the worst
  of them: every output coordinate (the coordinates of a PCA-whitened output are the principal axes it was fitted
  on, so a bimodal or flat direction of the training cloud is one of them) and the principal axes of the sample's own
  covariance (where a cloud is not yet isotropic, its odd directions stand out there). Not searched: a non-Gaussian
  direction hidden at an angle to every coordinate of an exactly isotropic cloud, where the principal axes are
  arbitrary;
- **norms**: the whitened sample's norms against those of a whitened N(0, I) sample (a two-sample KS distance), which
  catches radial shape (rows of varying scale) that marginals can miss.

The Epps–Pulley statistic T of N draws estimates N times the population distance ∫|φ − φ_N(0,1)|² w(t) dt, so a bound
on (T − T_null)/N bounds the population, as the isotropy criteria do. The marginals' floor is the worst of the same
directions in one N(0, I) sample of the same size, drawn with a fixed seed: the worst of many directions is well
above the typical one in Gaussian data too.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy.stats import ks_2samp

from ragcun.losses.epps_pulley import EppsPulley, epps_pulley_expected_null

# Population Epps–Pulley distance allowed along any direction tested (the quadrature of EppsPulley's defaults; printed
# by benchmarks/shape_bound.py): a uniform or a Laplace marginal is at 0.016, Student's t with 5 degrees of freedom at
# 0.0086, whitened two-cluster mixtures with centres at ±0.8 and ±0.9 at 0.0072 and 0.027 (all fail); t with 10
# degrees of freedom is at 0.0015 and the barely bimodal ±0.7 mixture at 0.0018 (both pass).
SHAPE_BOUND = 0.004
# Population KS distance allowed between the norms and those of N(0, I); sampling noise is allowed on top at
# KS_QUANTILE (the two-sample Kolmogorov distribution's 99.9% point), and KS_MEAN is that distribution's mean.
NORM_KS_BOUND = 0.05
KS_QUANTILE = 1.95
KS_MEAN = 0.8687

EP_KNOTS = 17
EP_T_MAX = 3.0
_CHUNK_ELEMENTS = 120_000  # projected values held at once: each becomes EP_KNOTS angles, cosines and sines

NORMALITY_FIGURES: tuple[str, ...] = (
    "sigreg_floor", "coordinate_ep_mean", "marginal_ep_max", "marginal_ep_max_floor", "norm_ks", "norm_ks_floor",
    "slices_ok", "marginals_ok", "norms_ok",
)  # fmt: skip


def epps_pulley_columns(columns: np.ndarray) -> np.ndarray:
    """The Epps–Pulley statistic of each column of ``columns`` (N × S, float64) against N(0, 1), uncentred."""
    n_samples, count = columns.shape
    statistic = EppsPulley(num_knots=EP_KNOTS, t_max=EP_T_MAX, dtype=torch.float64)
    chunk = max(1, _CHUNK_ELEMENTS // max(n_samples, 1))
    values = np.empty(count)
    with torch.no_grad():
        for start in range(0, count, chunk):
            block = torch.from_numpy(np.ascontiguousarray(columns[:, start : start + chunk]))
            values[start : start + chunk] = statistic(block).numpy()
    return values


def _standardized(columns: np.ndarray) -> np.ndarray:
    """Each column centred and scaled to unit variance by its own statistics; a constant column stays 0."""
    centred = columns - columns.mean(axis=0)
    spread = centred.std(axis=0, ddof=1)
    return centred / np.where(spread > 0, spread, 1.0)


def _principal(x: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The sample's coordinates along its top ``count`` principal axes, and the variances along them."""
    centred = x - x.mean(axis=0)
    eigenvalues, vectors = np.linalg.eigh(centred.T @ centred / (len(x) - 1))
    return centred @ vectors[:, ::-1][:, :count], eigenvalues[::-1][:count]


def _shape(x: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(per-coordinate statistics, the sample whitened along its top axes that vary, or None when none does, the
    statistics of every direction tested). An axis without variance has no shape to judge; that it lacks the variance
    N(0, I) has is ``is_isotropic``'s to say."""
    coordinates = epps_pulley_columns(_standardized(x))
    axes, variances = _principal(x, count)
    varying = variances > max(variances[0], 0.0) * 1e-12
    if not varying.any():
        return coordinates, None, coordinates
    axes, variances = axes[:, varying], variances[varying]
    whitened = axes / np.sqrt(variances)
    return coordinates, whitened, np.concatenate([coordinates, epps_pulley_columns(_standardized(axes))])


@functools.lru_cache(maxsize=8)
def _reference(n_samples: int, dim: int, count: int, seed: int) -> tuple[np.ndarray, float]:
    """The N(0, I) reference of a sample's size: its whitened norms and its worst direction. The same for every sample
    of that size, so a monitor that evaluates the same held-out rows at every step, or a report of several models on
    one corpus, draws and measures it once."""
    _, whitened, tested = _shape(np.random.default_rng(seed).standard_normal((n_samples, dim)), count)
    norms = np.linalg.norm(whitened, axis=1)
    norms.flags.writeable = False  # shared between calls
    return norms, float(tested.max())


def normality_figures(x: np.ndarray, sigreg: float, seed: int) -> dict[str, float | bool]:
    """The figures of :data:`NORMALITY_FIGURES` for the N × D float64 sample ``x``, whose random-slice statistic
    ``sigreg`` the caller has computed. ``seed`` draws the N(0, I) reference sample.

    The principal axes are the top min(D, N // 2) ones: whitening by a covariance estimated from fewer than about two
    samples per dimension would mostly whiten noise."""
    n_samples, dim = x.shape
    count = max(1, min(dim, n_samples // 2))
    sigreg_floor = epps_pulley_expected_null(EP_KNOTS, EP_T_MAX)
    reference_norms, marginal_ep_max_floor = _reference(n_samples, dim, count, seed)
    coordinates, whitened, tested = _shape(x, count)
    norm_ks = 1.0 if whitened is None else float(
        ks_2samp(np.linalg.norm(whitened, axis=1), reference_norms, method="asymp").statistic)
    marginal_ep_max = float(tested.max())
    return {
        "sigreg_floor": float(sigreg_floor),
        "coordinate_ep_mean": float(coordinates.mean()),
        "marginal_ep_max": marginal_ep_max,
        "marginal_ep_max_floor": marginal_ep_max_floor,
        "norm_ks": norm_ks,
        "norm_ks_floor": KS_MEAN * math.sqrt(2.0 / n_samples),
        "slices_ok": bool((sigreg - sigreg_floor) / n_samples <= SHAPE_BOUND),
        "marginals_ok": bool((marginal_ep_max - marginal_ep_max_floor) / n_samples <= SHAPE_BOUND),
        "norms_ok": bool(norm_ks <= NORM_KS_BOUND + KS_QUANTILE * math.sqrt(2.0 / n_samples)),
    }
