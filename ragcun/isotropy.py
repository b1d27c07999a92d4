"""How close is a set of embeddings to an isotropic Gaussian N(0, I)?

ragcun trains embedders whose raw (un-normalised) outputs should follow N(0, I_D).
The training monitor and the evaluation scripts both need to answer "are we
there yet?" with the same numbers, so the statistics live here, in float64 numpy;
the one exception, the sliced Epps–Pulley figure ``sigreg``, is the training
loss's own statistic (:class:`ragcun.losses.epps_pulley.EppsPulley`, run on
float64 CPU tensors), so the monitor reports exactly what the loss measures.

Raw figures mean little on their own: even perfect N(0, I) samples have a
covariance that differs from I, by an amount that shrinks with N (300 samples in
512-d have a mean of norm ≈ 1.3 and per-dimension variances spread ±0.25). Each
figure is therefore reported beside what N(0, I) samples of the same N and D would
give, and every pass/fail criterion is judged against that floor: a threshold says
how far the *population* may be from N(0, I). The mean and the variances are
allowed ``SAMPLING_Z`` standard deviations of sampling noise on top; the covariance
is judged as a ratio to its floor, the correlations by their excess over it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, ContextManager

import numpy as np
import torch

from ragcun.gaussian import chi_moments
from ragcun.normality import NORMALITY_FIGURES, epps_pulley_columns, normality_figures

__all__ = ["ISOTROPY_FIGURES", "isotropy_figures", "isotropy_report"]

# Every figure of isotropy_report, in the order it returns them: the one list that tables, logs and summaries
# pick their columns from (by name, through isotropy_figures).
ISOTROPY_FIGURES: tuple[str, ...] = (
    "n_samples", "dim",
    "mean_norm", "mean_norm_excess",
    "variance_mean", "variance_std", "variance_min", "variance_max",
    "norm_mean", "norm_std", "expected_norm_mean", "expected_norm_std",
    "cov_identity_fro", "cov_identity_fro_floor", "cov_floor_ratio",
    "mean_abs_offdiag_corr", "mean_abs_offdiag_corr_floor", "offdiag_corr_excess",
    "effective_rank", "isoscore", "sigreg",
    "mean_ok", "cov_ok", "corr_ok", "variance_ok", "is_isotropic",
    *NORMALITY_FIGURES, "is_gaussian",
)  # fmt: skip

# How many standard deviations of sampling noise the mean and variance criteria allow on top of their thresholds: a
# perfect N(0, I) sample fails one with probability of order 1e-3, while a mean offset of norm 1 or variances spread
# 0.5–1.5 (twice the default bounds) still fail at a few hundred samples.
SAMPLING_Z = 3.0

# Directions projected at once while computing SIGReg: the projections of a large sample stay a few hundred MB.
_SIGREG_CHUNK_DIRECTIONS = 64


def _single_blas_thread() -> ContextManager[object]:
    """Run the symmetric eigensolver on one BLAS thread when threadpoolctl is available.

    LAPACK's eigensolver makes many small BLAS calls; with OpenBLAS busy-waiting threads
    on a machine whose cores are also used by training, D = 768 went from ~0.04 s
    (one thread) to ~5 s (two contended threads). One thread is fast enough at this size.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it we just accept the BLAS default
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _as_float64_matrix(embeddings: Any) -> np.ndarray:
    """Return a float64 numpy copy of a numpy array or torch tensor, checked for shape and finiteness."""
    if hasattr(embeddings, "detach") and hasattr(embeddings, "cpu"):
        # Torch tensor: cast in torch first, because numpy cannot hold bfloat16.
        array = embeddings.detach().cpu().double().numpy()
    else:
        try:
            array = np.asarray(embeddings, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"embeddings must be a numeric numpy array or torch tensor of shape (N, D); "
                f"could not convert {type(embeddings).__name__} to float64: {error}"
            ) from error

    if array.ndim != 2:
        raise ValueError(
            f"embeddings must be 2-D with shape (N, D) (one row per text), got {array.ndim}-D "
            f"shape {tuple(array.shape)}. Reshape, e.g. stack single vectors into a matrix."
        )
    n_samples, dim = array.shape
    if n_samples < 2:
        raise ValueError(
            f"embeddings has {n_samples} row(s); the sample covariance needs at least 2 rows. "
            "Embed more texts (hundreds or more give meaningful figures)."
        )
    if dim < 1:
        raise ValueError("embeddings has 0 columns; expected shape (N, D) with D >= 1.")
    finite_rows = np.isfinite(array).all(axis=1)
    n_bad = int(n_samples - finite_rows.sum())
    if n_bad:
        raise ValueError(
            f"{n_bad} of {n_samples} embedding rows contain NaN or inf values; "
            "check the model (e.g. diverged weights, fp16 overflow) or its inputs (e.g. empty texts)."
        )
    return array


def _validate_thresholds(
    max_mean_norm: float,
    max_cov_floor_ratio: float,
    max_offdiag_corr: float,
    variance_range: tuple[float, float],
    sigreg_slices: int,
) -> tuple[float, float]:
    """Reject thresholds that would make the verdict meaningless, before doing any work."""
    for name, value in (
        ("max_mean_norm", max_mean_norm),
        ("max_cov_floor_ratio", max_cov_floor_ratio),
        ("max_offdiag_corr", max_offdiag_corr),
    ):
        if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    try:
        low, high = (float(v) for v in variance_range)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"variance_range must be a pair (low, high) of numbers, got {variance_range!r}."
        ) from error
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
        raise ValueError(
            f"variance_range must satisfy 0 <= low < high with finite bounds, got {variance_range!r}; "
            "e.g. (0.8, 1.2) around the target variance 1."
        )
    if isinstance(sigreg_slices, bool) or not isinstance(sigreg_slices, (int, np.integer)) or sigreg_slices < 1:
        raise ValueError(f"sigreg_slices must be a positive integer, got {sigreg_slices!r}.")
    return low, high


def isotropy_figures(*names: str, among: tuple[str, ...] = ISOTROPY_FIGURES) -> tuple[str, ...]:
    """``names`` (in the order given), each checked to be one of ``among`` (by default every figure of
    :func:`isotropy_report`): a table or log that keeps a subset names it through here, so renaming a figure fails
    at import instead of silently dropping a column."""
    unknown = [name for name in names if name not in among]
    if unknown:
        raise KeyError(f"{unknown} are not among the isotropy figures {list(among)}.")
    return names


def _sliced_epps_pulley(x: np.ndarray, slices: int, seed: int) -> float:
    """Sliced Epps–Pulley statistic: mean over random unit directions of T for the projected, uncentred data.

    Uncentred on purpose: a mean offset is a departure from N(0, I) that it must detect. The directions come from
    numpy's generator seeded with ``seed`` (the report's own seed, independent of the training loss's stream).
    """
    directions = np.random.default_rng(seed).standard_normal((slices, x.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    total = sum(float(epps_pulley_columns(x @ directions[start : start + _SIGREG_CHUNK_DIRECTIONS].T).sum())
                for start in range(0, slices, _SIGREG_CHUNK_DIRECTIONS))
    return total / slices


def _isoscore_from_variances(pca_variances: np.ndarray) -> float:
    """IsoScore (Rudman et al. 2022) from the variances of the PCA-rotated data.

    1 when every direction carries equal variance, 0 when one direction carries it all,
    and (k − 1)/(D − 1) when k directions share it equally.
    """
    dim = pca_variances.shape[0]
    if dim == 1:
        return 1.0  # a single dimension is trivially "uniformly used"; the formula is 0/0
    norm = float(np.linalg.norm(pca_variances))
    if norm == 0.0:
        return 0.0  # constant embeddings use no dimension at all
    normalised = math.sqrt(dim) * pca_variances / norm
    sqrt_dim = math.sqrt(dim)
    defect = float(np.linalg.norm(normalised - 1.0)) / math.sqrt(2.0 * (dim - sqrt_dim))
    phi = (dim - defect**2 * (dim - sqrt_dim)) ** 2 / dim**2
    return (dim * phi - 1.0) / (dim - 1.0)


def _trace_of_squared_covariance(cov: np.ndarray, n_samples: int) -> float:
    """An unbiased estimate of tr(Σ²) from the sample covariance (Srivastava 2005, for Gaussian data): tr(S²)
    itself overshoots by about tr(Σ)²/N, which at N ~ D is larger than tr(Σ²)."""
    n, trace, trace_sq = n_samples - 1, float(np.trace(cov)), float(np.sum(cov**2))
    if n_samples < 3:
        return trace_sq
    estimate = n * n / ((n - 1) * (n + 2)) * (trace_sq - trace * trace / n)
    return max(estimate, trace * trace / cov.shape[0])  # tr(Σ²) >= tr(Σ)²/D


def isotropy_report(
    embeddings: Any,
    *,
    max_mean_norm: float = 0.5,
    max_cov_floor_ratio: float = 2.0,
    max_offdiag_corr: float = 0.05,
    variance_range: tuple[float, float] = (0.8, 1.2),
    sigreg_slices: int = 1024,
    seed: int = 0,
) -> dict[str, float | int | bool]:
    """Summarise how far ``embeddings`` (N × D, numpy or torch) are from N(0, I_D).

    Returns a flat, JSON-serialisable dict (plain Python float/int/bool):

    Size
      ``n_samples``, ``dim``: N and D.
    Location
      ``mean_norm``: ‖mean vector‖₂ (N(0, I) samples give about sqrt(D/N)).
    Per-dimension variance (ddof=1), summarised across the D dimensions
      ``variance_mean``, ``variance_std`` (spread across dimensions, ddof=0),
      ``variance_min``, ``variance_max``.
    Embedding norms ‖x_n‖₂ and their N(0, I_D) targets (the chi distribution)
      ``norm_mean``, ``norm_std`` (ddof=1), ``expected_norm_mean``, ``expected_norm_std``.
    Covariance vs identity
      ``cov_identity_fro``: ‖Cov − I‖_F, Cov the sample covariance (ddof=1);
      ``cov_identity_fro_floor``: sqrt(D(D+1)/(N−1)), the root of E‖Cov − I‖²_F for
      N(0, I) samples, i.e. the best achievable value at this N;
      ``cov_floor_ratio``: cov_identity_fro / cov_identity_fro_floor (≈ 1 for N(0, I) data).
    Correlation
      ``mean_abs_offdiag_corr``: mean |Pearson correlation| over off-diagonal pairs
      (0 when D = 1; a zero-variance dimension counts as uncorrelated);
      ``mean_abs_offdiag_corr_floor``: ≈ sqrt(2/(π(N−1))), its value for independent data.
    Spectrum
      ``effective_rank``: exp(entropy of normalised covariance eigenvalues) (Roy & Vetterli 2007), in [1, D];
      ``isoscore``: IsoScore (Rudman et al. 2022), 1 = isotropic, 0 = one direction holds all variance.
    Distribution
      ``sigreg``: mean sliced Epps–Pulley statistic over ``sigreg_slices`` random unit
      directions (seeded by ``seed``), uncentred; O(1) for N(0, I) data, grows with N otherwise.
    Beyond the sampling floor
      ``mean_norm_excess``: sqrt(max(0, ‖mean‖² − tr(Cov)/N)), the bias-corrected norm of the
      population mean (‖mean‖² of N samples overshoots by tr(Cov)/N on average);
      ``offdiag_corr_excess``: sqrt(max(0, mean r² − 1/(N−1))) over off-diagonal correlations r
      between dimensions that vary, the root-mean-square correlation beyond what independent
      samples show.
    Verdict (each threshold bounds the population; the mean and variance criteria allow
    ``SAMPLING_Z`` standard deviations of sampling noise on top)
      ``mean_ok``: ‖mean‖² − tr(Cov)/N < max_mean_norm² + z·sqrt(2 tr(Cov²))/N;
      ``cov_ok``: cov_identity_fro ≤ max_cov_floor_ratio × cov_identity_fro_floor;
      ``corr_ok``: offdiag_corr_excess < max_offdiag_corr;
      ``variance_ok``: every per-dimension variance in variance_range widened by z·sqrt(2/(N−1)),
      the standard deviation of a sample variance (inclusive);
      ``is_isotropic``: all four.
    Gaussian, beyond the first two moments (:mod:`ragcun.normality`; the same population bound on the Epps–Pulley
    distance along every direction tested)
      ``sigreg_floor``: the random-slice statistic's expectation for N(0, I) data; ``slices_ok``: the random slices
      within the bound of it;
      ``coordinate_ep_mean``: the statistic of each output coordinate (standardized), averaged;
      ``marginal_ep_max``: the worst statistic over the coordinates and the top min(D, N // 2) principal axes, each
      standardized; ``marginal_ep_max_floor``: the same search on an
      N(0, I) sample of the same N and D (drawn with ``seed``); ``marginals_ok``: within the bound of that floor;
      ``norm_ks``: two-sample KS distance between the whitened sample's norms and the reference's; ``norm_ks_floor``:
      its expectation between two N(0, I) samples; ``norms_ok``: within a population bound plus sampling noise;
      ``is_gaussian``: ``is_isotropic`` and all three.

    Raises ValueError for input that is not (N ≥ 2, D) and finite, and for invalid thresholds.
    """
    low, high = _validate_thresholds(
        max_mean_norm, max_cov_floor_ratio, max_offdiag_corr, variance_range, sigreg_slices
    )
    x = _as_float64_matrix(embeddings)
    n_samples, dim = x.shape

    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (n_samples - 1)
    variances = np.diag(cov).copy()

    norms = np.linalg.norm(x, axis=1)
    expected_norm_mean, expected_norm_std = chi_moments(dim)

    cov_identity_fro = float(np.linalg.norm(cov - np.eye(dim)))
    cov_floor = math.sqrt(dim * (dim + 1) / (n_samples - 1))

    if dim > 1:
        stds = np.sqrt(variances)
        # A constant dimension has no defined correlation; treat it as uncorrelated rather than NaN.
        inv_stds = np.divide(1.0, stds, out=np.zeros_like(stds), where=stds > 0)
        corr = cov * inv_stds[:, None] * inv_stds[None, :]
        abs_corr = np.abs(corr)
        offdiag_sum = abs_corr.sum() - np.trace(abs_corr)
        mean_abs_offdiag_corr = float(offdiag_sum / (dim * (dim - 1)))
        varying = corr[np.ix_(stds > 0, stds > 0)]  # a constant dimension has no correlation to judge
        count = varying.shape[0]
        mean_squared_corr = float(((varying**2).sum() - count) / (count * (count - 1))) if count > 1 else 0.0
    else:
        mean_abs_offdiag_corr = mean_squared_corr = 0.0
    # E[r²] = 1/(N−1) exactly for independent Gaussian coordinates
    offdiag_corr_excess = math.sqrt(max(0.0, mean_squared_corr - 1.0 / (n_samples - 1)))
    # Approximation: for independent Gaussians r ≈ N(0, 1/(N−1)) at large N, so
    # E|r| ≈ sqrt(2/(π(N−1))). (Exact: Γ((N−1)/2) / (√π Γ(N/2)); the two agree to O(1/N).)
    corr_floor = math.sqrt(2.0 / (math.pi * (n_samples - 1)))

    # The PCA-rotated data's per-axis variances are exactly the covariance eigenvalues,
    # so the eigenvectors themselves are never needed.
    with _single_blas_thread():
        eigenvalues = np.linalg.eigvalsh(cov)
    eigenvalues = np.clip(eigenvalues, 0.0, None)  # rounding can leave tiny negatives
    total_variance = float(eigenvalues.sum())
    if total_variance > 0:
        p = eigenvalues / total_variance
        p = p[p > 0]  # 0 · log 0 = 0
        effective_rank = float(np.exp(-(p * np.log(p)).sum()))
    else:
        effective_rank = 0.0  # constant embeddings span nothing
    isoscore = _isoscore_from_variances(eigenvalues)

    sigreg = _sliced_epps_pulley(x, int(sigreg_slices), seed)
    with _single_blas_thread():
        normality = normality_figures(x, sigreg, seed)

    mean_norm = float(np.linalg.norm(mean))
    # the sample mean of N draws with covariance C: E‖m‖² = ‖μ‖² + tr(C)/N, sd(‖m‖²) = sqrt(2 tr(C²))/N at μ = 0
    mean_excess_squared = mean_norm**2 - float(variances.sum()) / n_samples
    mean_noise = math.sqrt(2.0 * _trace_of_squared_covariance(cov, n_samples)) / n_samples
    mean_ok = mean_excess_squared < max_mean_norm**2 + SAMPLING_Z * mean_noise
    cov_ok = cov_identity_fro <= max_cov_floor_ratio * cov_floor
    corr_ok = offdiag_corr_excess < max_offdiag_corr
    variance_noise = SAMPLING_Z * math.sqrt(2.0 / (n_samples - 1))
    variance_ok = bool(np.all((variances >= low - variance_noise) & (variances <= high + variance_noise)))

    return {
        "n_samples": int(n_samples),
        "dim": int(dim),
        "mean_norm": mean_norm,
        "mean_norm_excess": math.sqrt(max(0.0, mean_excess_squared)),
        "variance_mean": float(variances.mean()),
        "variance_std": float(variances.std()),
        "variance_min": float(variances.min()),
        "variance_max": float(variances.max()),
        "norm_mean": float(norms.mean()),
        "norm_std": float(norms.std(ddof=1)),
        "expected_norm_mean": float(expected_norm_mean),
        "expected_norm_std": float(expected_norm_std),
        "cov_identity_fro": cov_identity_fro,
        "cov_identity_fro_floor": float(cov_floor),
        "cov_floor_ratio": float(cov_identity_fro / cov_floor),
        "mean_abs_offdiag_corr": mean_abs_offdiag_corr,
        "mean_abs_offdiag_corr_floor": float(corr_floor),
        "offdiag_corr_excess": float(offdiag_corr_excess),
        "effective_rank": effective_rank,
        "isoscore": float(isoscore),
        "sigreg": float(sigreg),
        "mean_ok": bool(mean_ok),
        "cov_ok": bool(cov_ok),
        "corr_ok": bool(corr_ok),
        "variance_ok": variance_ok,
        "is_isotropic": bool(mean_ok and cov_ok and corr_ok and variance_ok),
        **normality,
        "is_gaussian": bool(mean_ok and cov_ok and corr_ok and variance_ok and normality["slices_ok"]
                            and normality["marginals_ok"] and normality["norms_ok"]),
    }
