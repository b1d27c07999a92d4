"""Tests for ragcun.isotropy on synthetic data whose answers are known in advance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

import ragcun.isotropy as iso
from ragcun.gaussian import chi_moments
from ragcun.isotropy import ISOTROPY_FIGURES, isotropy_figures, isotropy_report
from ragcun.losses.epps_pulley import EppsPulley

N, D = 4000, 64

EXPECTED_KEYS = {
    "n_samples", "dim", "mean_norm", "mean_norm_excess", "offdiag_corr_excess",
    "variance_mean", "variance_std", "variance_min", "variance_max",
    "norm_mean", "norm_std", "expected_norm_mean", "expected_norm_std",
    "cov_identity_fro", "cov_identity_fro_floor", "cov_floor_ratio",
    "mean_abs_offdiag_corr", "mean_abs_offdiag_corr_floor",
    "effective_rank", "isoscore", "sigreg",
    "mean_ok", "cov_ok", "corr_ok", "variance_ok", "is_isotropic",
    "sigreg_floor", "coordinate_ep_mean", "marginal_ep_max", "marginal_ep_max_floor", "norm_ks", "norm_ks_floor",
    "slices_ok", "marginals_ok", "norms_ok", "is_gaussian",
}  # fmt: skip


@pytest.fixture(scope="module")
def gaussian() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, D))


@pytest.fixture(scope="module")
def gaussian_report(gaussian: np.ndarray) -> dict:
    return isotropy_report(gaussian, sigreg_slices=256)


def _exact_covariance(rng: np.random.Generator, n: int, variances: np.ndarray) -> np.ndarray:
    """Samples whose mean is exactly 0 and whose sample covariance (ddof=1) is exactly diag(variances)."""
    x = rng.standard_normal((n, variances.size))
    x -= x.mean(axis=0)
    evals, evecs = np.linalg.eigh(x.T @ x / (n - 1))
    white = x @ evecs @ np.diag(evals**-0.5) @ evecs.T
    return white * np.sqrt(variances)


def _random_rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


# --- N(0, I) ------------------------------------------------------------------------------


def test_report_keys_and_json_round_trip(gaussian_report: dict) -> None:
    assert set(gaussian_report) == EXPECTED_KEYS
    assert tuple(gaussian_report) == ISOTROPY_FIGURES  # the canonical list, in the report's order
    assert json.loads(json.dumps(gaussian_report)) == gaussian_report  # logs and summaries keep every figure exactly
    assert gaussian_report["n_samples"] == N and gaussian_report["dim"] == D


def test_gaussian_is_isotropic(gaussian_report: dict) -> None:
    r = gaussian_report
    assert r["is_isotropic"] and r["mean_ok"] and r["cov_ok"] and r["corr_ok"] and r["variance_ok"]
    assert r["mean_norm"] < 2 * math.sqrt(D / N)  # E‖mean‖ ≈ sqrt(D/N) ≈ 0.13
    assert r["cov_identity_fro_floor"] == pytest.approx(math.sqrt(D * (D + 1) / (N - 1)))
    assert 0.85 < r["cov_floor_ratio"] < 1.15
    assert r["cov_floor_ratio"] == pytest.approx(r["cov_identity_fro"] / r["cov_identity_fro_floor"])
    assert r["mean_abs_offdiag_corr_floor"] == pytest.approx(math.sqrt(2 / (math.pi * (N - 1))))
    assert 0.9 < r["mean_abs_offdiag_corr"] / r["mean_abs_offdiag_corr_floor"] < 1.1
    assert r["norm_mean"] == pytest.approx(r["expected_norm_mean"], rel=0.01)
    assert r["norm_std"] == pytest.approx(r["expected_norm_std"], rel=0.1)
    assert r["variance_mean"] == pytest.approx(1.0, abs=0.02)
    assert 0.95 * D < r["effective_rank"] <= D
    assert 0.95 < r["isoscore"] <= 1.0


def test_shift_fails_mean_and_raises_sigreg(gaussian: np.ndarray, gaussian_report: dict) -> None:
    shifted = isotropy_report(gaussian + 1.0, sigreg_slices=256)
    assert shifted["mean_norm"] == pytest.approx(math.sqrt(D), rel=0.05)
    assert not shifted["mean_ok"] and not shifted["is_isotropic"]
    # A shift leaves the covariance alone...
    assert shifted["cov_identity_fro"] == pytest.approx(gaussian_report["cov_identity_fro"])
    # ...but sigreg uses uncentred projections, so it must see it.
    assert gaussian_report["sigreg"] < 5
    assert shifted["sigreg"] > 20 * gaussian_report["sigreg"]


def test_scaled_fails_variance(gaussian: np.ndarray) -> None:
    r = isotropy_report(gaussian * 2.0, sigreg_slices=16)
    assert r["variance_mean"] == pytest.approx(4.0, abs=0.08)
    assert not r["variance_ok"] and not r["cov_ok"] and not r["is_isotropic"]
    assert r["mean_ok"] and r["corr_ok"]  # scaling changes neither the (near-zero) mean much nor correlations
    assert r["norm_mean"] == pytest.approx(2 * r["expected_norm_mean"], rel=0.01)


def test_collapsed_rank_one() -> None:
    rng = np.random.default_rng(1)
    direction = np.ones(32) / math.sqrt(32)
    x = rng.standard_normal((2000, 1)) * direction + 1e-3 * rng.standard_normal((2000, 32))
    r = isotropy_report(x, sigreg_slices=16)
    assert r["effective_rank"] == pytest.approx(1.0, abs=0.05)
    assert r["isoscore"] == pytest.approx(0.0, abs=0.01)
    assert r["mean_abs_offdiag_corr"] > 0.99
    assert not r["corr_ok"] and not r["is_isotropic"]


# --- exact answers ---------------------------------------------------------------------------


def test_exact_diagonal_covariance() -> None:
    variances = np.array([0.5, 1.0, 1.5, 2.0])
    x = _exact_covariance(np.random.default_rng(2), 500, variances)
    r = isotropy_report(x, sigreg_slices=8)
    assert r["variance_min"] == pytest.approx(0.5, abs=1e-10)
    assert r["variance_max"] == pytest.approx(2.0, abs=1e-10)
    assert r["variance_mean"] == pytest.approx(1.25, abs=1e-10)
    assert r["variance_std"] == pytest.approx(np.std(variances), abs=1e-10)
    assert r["mean_norm"] == pytest.approx(0.0, abs=1e-10)
    assert r["cov_identity_fro"] == pytest.approx(math.sqrt(0.25 + 0 + 0.25 + 1), abs=1e-10)
    assert r["mean_abs_offdiag_corr"] == pytest.approx(0.0, abs=1e-10)
    p = variances / variances.sum()
    assert r["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-10)
    assert not r["variance_ok"]  # 0.5 and 2.0 lie outside (0.8, 1.2)
    assert isotropy_report(x, variance_range=(0.5 - 1e-9, 2.0 + 1e-9), sigreg_slices=8)["variance_ok"]


def test_variance_range_is_inclusive() -> None:
    x = np.array([[-0.5, -1.0], [0.5, 1.0]])  # ddof=1 variances exactly 0.5 and 2.0
    r = isotropy_report(x, variance_range=(0.5, 2.0), sigreg_slices=4)
    assert (r["variance_min"], r["variance_max"]) == (0.5, 2.0)
    assert r["variance_ok"]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_isoscore_k_equal_dimensions(k: int) -> None:
    # Rudman et al.: variance spread evenly over k of D directions gives IsoScore (k − 1)/(D − 1),
    # i.e. 1 for isotropic (k = D) and 0 for one direction. Rotated, so the directions are not axes.
    dim = 6
    rng = np.random.default_rng(3 + k)
    x = _exact_covariance(rng, 300, np.r_[np.full(k, 3.0), np.zeros(dim - k)]) @ _random_rotation(rng, dim)
    r = isotropy_report(x, sigreg_slices=8)
    assert r["isoscore"] == pytest.approx((k - 1) / (dim - 1), abs=1e-8)
    assert r["effective_rank"] == pytest.approx(k, rel=1e-8)


def test_subsets_of_figures_are_checked_by_name() -> None:
    assert isotropy_figures("sigreg", "mean_norm") == ("sigreg", "mean_norm")  # the order given, not the report's
    with pytest.raises(KeyError, match="mean_nrom"):
        isotropy_figures("mean_norm", "mean_nrom")
    with pytest.raises(KeyError, match="isoscore"):
        isotropy_figures("isoscore", among=("mean_norm", "sigreg"))


def test_expected_norm_moments() -> None:
    mean, std = chi_moments(1)  # |z| for z ~ N(0, 1): half-normal
    assert mean == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)
    assert std == pytest.approx(math.sqrt(1 - 2 / math.pi), rel=1e-12)
    mean, std = chi_moments(2)  # Rayleigh(1)
    assert mean == pytest.approx(math.sqrt(math.pi / 2), rel=1e-12)
    for dim in (768, 100_000):  # large-D expansion sqrt(D − 1/2 + 1/(8D)), std → sqrt(1/2)
        mean, std = chi_moments(dim)
        assert mean == pytest.approx(math.sqrt(dim - 0.5), rel=1e-6)
        assert std == pytest.approx(math.sqrt(0.5), rel=1e-3)
    r = isotropy_report(np.random.default_rng(4).standard_normal((50, 1)), sigreg_slices=4)
    assert r["expected_norm_mean"] == pytest.approx(math.sqrt(2 / math.pi))


# --- Epps–Pulley -----------------------------------------------------------------------------


def _epps_pulley_quad(sample: np.ndarray, t_max: float = 3.0) -> float:
    def integrand(t: float) -> float:
        cos_err = np.cos(t * sample).mean() - math.exp(-t * t / 2)
        sin_mean = np.sin(t * sample).mean()
        return (cos_err**2 + sin_mean**2) * math.exp(-t * t / 2)

    return sample.size * 2 * quad(integrand, 0.0, t_max, limit=200, epsrel=1e-10)[0]


@pytest.mark.parametrize(
    "sample",
    [
        np.random.default_rng(5).standard_normal(200),
        np.random.default_rng(6).standard_normal(200) + 0.5,
        np.random.default_rng(7).exponential(size=300),
    ],
    ids=["normal", "shifted", "exponential"],
)
def test_epps_pulley_matches_quadrature(sample: np.ndarray) -> None:
    # With D = 1 every random unit direction is ±1 and T(−x) = T(x): sigreg is the 1-D statistic of the sample.
    got = isotropy_report(sample[:, None], sigreg_slices=3)["sigreg"]
    expected = _epps_pulley_quad(sample)
    # 17-knot trapezoid vs adaptive quadrature; a missing ×N or ×2 would be off by 100%+.
    assert got == pytest.approx(expected, rel=1e-2)
    # Exactly the 17-knot trapezoid rule, in float64.
    t = np.linspace(0.0, 3.0, 17)
    ecf = np.exp(1j * np.outer(t, sample)).mean(axis=1)
    integrand = np.abs(ecf - np.exp(-t * t / 2)) ** 2 * np.exp(-t * t / 2)
    assert got == pytest.approx(sample.size * 2 * np.trapezoid(integrand, t), rel=1e-10)


def test_sigreg_is_mean_epps_pulley_of_uncentred_projections() -> None:
    # With D = 1 every random unit direction is ±1 and T(−x) = T(x), so sigreg must equal
    # the 1-D statistic of the raw (uncentred) column whatever the random draw.
    x = np.random.default_rng(8).standard_normal((300, 1)) + 0.7
    r = isotropy_report(x, sigreg_slices=5)
    statistic = EppsPulley(num_knots=17, t_max=3.0, dtype=torch.float64)
    assert r["sigreg"] == pytest.approx(float(statistic(torch.from_numpy(x[:, 0]))), rel=1e-10)
    assert r["sigreg"] != pytest.approx(float(statistic(torch.from_numpy(x[:, 0] - x.mean()))), rel=1e-2)


def test_sigreg_chunking_and_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(9).standard_normal((4000, 8)) * 1.3
    whole = isotropy_report(x, sigreg_slices=37, seed=1)["sigreg"]
    monkeypatch.setattr(iso, "_SIGREG_CHUNK_DIRECTIONS", 5)
    chunked = isotropy_report(x, sigreg_slices=37, seed=1)["sigreg"]  # 8 chunks, the last one partial
    assert chunked == pytest.approx(whole, rel=1e-12)
    assert isotropy_report(x, sigreg_slices=37, seed=2)["sigreg"] != pytest.approx(whole, rel=1e-6)


# --- input handling --------------------------------------------------------------------------


def test_torch_input_matches_numpy(gaussian: np.ndarray) -> None:
    small = gaussian[:500, :16]
    expected = isotropy_report(small, sigreg_slices=32)
    assert isotropy_report(torch.from_numpy(small), sigreg_slices=32) == expected
    as_f32 = small.astype(np.float32)
    assert isotropy_report(torch.from_numpy(as_f32), sigreg_slices=32) == isotropy_report(as_f32, sigreg_slices=32)
    bf16 = isotropy_report(torch.from_numpy(small).to(torch.bfloat16), sigreg_slices=32)
    assert bf16["variance_mean"] == pytest.approx(expected["variance_mean"], rel=0.02)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(10), r"2-D .*got 1-D"),
        (np.zeros((2, 3, 4)), r"2-D .*got 3-D"),
        (np.zeros((1, 8)), r"1 row.*at least 2 rows"),
        (np.zeros((5, 0)), r"0 columns"),
        (np.array([["a", "b"], ["c", "d"]]), r"could not convert"),
    ],
)
def test_bad_shapes_raise(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        isotropy_report(bad)


def test_non_finite_rows_are_counted() -> None:
    x = np.random.default_rng(10).standard_normal((20, 4))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"1 of 20 embedding rows contain NaN or inf.*check the model"):
        isotropy_report(x)
    x[7, :] = np.inf
    x[3, 2] = -np.inf  # same row again: still counted once
    with pytest.raises(ValueError, match=r"2 of 20 embedding rows"):
        isotropy_report(torch.from_numpy(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_mean_norm": 0.0}, r"max_mean_norm must be a positive"),
        ({"max_cov_floor_ratio": -1.0}, r"max_cov_floor_ratio must be a positive"),
        ({"max_offdiag_corr": float("nan")}, r"max_offdiag_corr must be a positive"),
        ({"variance_range": (1.2, 0.8)}, r"variance_range must satisfy 0 <= low < high"),
        ({"variance_range": (-0.1, 1.2)}, r"variance_range must satisfy"),
        ({"variance_range": 1.0}, r"variance_range must be a pair"),
        ({"sigreg_slices": 0}, r"sigreg_slices must be a positive integer"),
    ],
)
def test_bad_thresholds_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        isotropy_report(np.zeros((4, 2)), **kwargs)


def test_custom_thresholds_change_verdict(gaussian: np.ndarray) -> None:
    x = gaussian[:, :16] + 0.05  # ‖shift‖ = 0.2 on top of ≈ sqrt(16/4000) ≈ 0.06 sampling noise
    default = isotropy_report(x, sigreg_slices=8)
    assert default["mean_ok"] and default["is_isotropic"]
    strict = isotropy_report(x, max_mean_norm=0.1, sigreg_slices=8)
    assert not strict["mean_ok"] and not strict["is_isotropic"]
    assert not isotropy_report(x, variance_range=(1.1, 1.3), sigreg_slices=8)["variance_ok"]
    assert not isotropy_report(x, max_cov_floor_ratio=0.5, sigreg_slices=8)["cov_ok"]
    mixed = x.copy()
    mixed[:, 1] = 0.3 * x[:, 0] + math.sqrt(1 - 0.09) * x[:, 1]  # one pair at r = 0.3: rms excess 0.3·sqrt(2/240) = 0.027
    assert isotropy_report(mixed, sigreg_slices=8)["corr_ok"]
    assert not isotropy_report(mixed, max_offdiag_corr=0.01, sigreg_slices=8)["corr_ok"]


@pytest.mark.parametrize("seed", range(5))
def test_criteria_allow_the_sampling_floor(seed: int) -> None:
    """300 exact N(0, I_512) samples pass, though their mean has norm ~1.3 and variances spread +-0.25; the same
    sample offset by a mean of norm 1, or with variances spread 0.5-1.5, fails."""
    x = np.random.default_rng(seed).standard_normal((300, 512))
    clean = isotropy_report(x, sigreg_slices=8)
    assert clean["mean_norm"] > 1.1 and clean["variance_max"] - clean["variance_min"] > 0.4  # the raw figures
    assert clean["is_isotropic"], {k: v for k, v in clean.items() if k.endswith("_ok")}
    offset = np.zeros(512)
    offset[:4] = 0.5  # norm 1
    shifted = isotropy_report(x + offset, sigreg_slices=8)
    assert not shifted["mean_ok"] and shifted["mean_norm_excess"] == pytest.approx(1.0, abs=0.25)
    spread = isotropy_report(x * np.sqrt(np.linspace(0.5, 1.5, 512)), sigreg_slices=8)
    assert not spread["variance_ok"] and not spread["is_isotropic"]
