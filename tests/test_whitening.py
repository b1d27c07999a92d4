"""ragcun.whitening: one principal-axes fit and one variance floor behind every whitening and its relatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ragcun.evaluation.reports import whitening
from ragcun.model import fit_projection
from ragcun.training.head import build_isotropic_head
from ragcun.whitening import VARIANCE_FLOOR, principal_axes, tempered_whitening, unit_variance_scale

STDS = np.array([3.0, 2.0, 0.0, 1.0, 0.5, 0.1])  # coordinate 2 is constant


def uncorrelated(n: int = 400, seed: int = 0) -> np.ndarray:
    """Coordinates with exactly these sample standard deviations and no correlation, so the principal axes are the
    coordinate axes and each eigenvalue is a coordinate's variance."""
    noise = np.random.default_rng(seed).normal(size=(n, len(STDS)))
    axes, _ = np.linalg.qr(noise - noise.mean(axis=0))  # orthonormal, zero-mean columns
    return 1.5 + axes * STDS * np.sqrt(n - 1)


def factor_on(weight: np.ndarray, coordinate: int) -> float:
    """How much a map multiplies a step along one input coordinate."""
    return float(np.linalg.norm(weight[:, coordinate]))


def test_every_whitening_path_floors_a_constant_coordinate_alike() -> None:
    x = uncorrelated()
    floored = 1 / np.sqrt(VARIANCE_FLOOR * STDS.max() ** 2)  # the one floor, relative to the largest variance
    paths = {
        "whiten": fit_projection(x, 6, "whiten")[0].double().numpy(),
        "mrl": fit_projection(x, 6, "mrl")[0].double().numpy(),
        "reports --whiten": whitening(x, 6)[0],
        "isotropic head": build_isotropic_head(x, 6)[0].linear.weight.detach().double().numpy(),
        "tempered, gamma 1": tempered_whitening(principal_axes(x), 1.0)[0].double().numpy(),
    }
    for name, weight in paths.items():
        assert factor_on(weight, 2) == pytest.approx(floored, rel=1e-5), name
        for coordinate in (0, 1, 3, 4, 5):  # every varying coordinate is whitened to unit variance
            assert factor_on(weight, coordinate) == pytest.approx(1 / STDS[coordinate], rel=1e-5), name
    assert principal_axes(x).eigenvalues[-1] == pytest.approx(VARIANCE_FLOOR * 9.0, rel=1e-9)


def test_whitening_has_identity_covariance_on_its_fit_data() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 12)) @ (rng.normal(size=(12, 12)) * np.linspace(0.1, 3.0, 12)) + 2.0
    axes = principal_axes(x)
    maps = {
        "whiten 12": fit_projection(x, 12, "whiten"),
        "whiten 5": fit_projection(x, 5, "whiten"),
        "gamma 1, rotated back": tempered_whitening(axes, 1.0),
        "gamma 1, top 7": tempered_whitening(axes, 1.0, 7),
    }
    for name, (weight, bias) in maps.items():
        y = x @ weight.double().numpy().T + bias.double().numpy()
        np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(len(bias)), atol=1e-4, err_msg=name)
        np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-4, err_msg=name)


def test_scaled_is_gamma_zero_one_factor_on_the_top_axes() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 8)) * np.linspace(0.2, 2.0, 8)
    weight, _ = fit_projection(x, 5, "scaled")
    factor = unit_variance_scale(x, 5)
    # every kept direction scaled by the same number: distances in the top-5 subspace, times one factor
    np.testing.assert_allclose(np.linalg.svd(weight.double().numpy(), compute_uv=False), factor, rtol=1e-6)
    assert factor == pytest.approx(1 / np.sqrt(np.sort(x.var(axis=0, ddof=1))[-5:].mean()), rel=0.05)
    y = x @ tempered_whitening(principal_axes(x), 0.0, 5)[0].double().numpy().T
    assert y.var(axis=0, ddof=1).mean() == pytest.approx(1.0, rel=1e-5)


def test_no_variance_at_all_is_refused() -> None:
    with pytest.raises(ValueError, match="no variance"):
        principal_axes(np.ones((10, 3)))


def test_the_whitening_dense_maps_its_fit_data_to_identity_covariance() -> None:
    from ragcun.whitening import whitening_dense

    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(600, 12)) @ rng.normal(size=(12, 12)) * np.linspace(0.1, 5, 12) + 2.0
    for width in (12, 5):
        dense = whitening_dense(cloud, width)
        with torch.no_grad():
            out = dense({"sentence_embedding": torch.from_numpy(cloud).float()})["sentence_embedding"].double().numpy()
        assert out.shape == (600, width)
        assert np.abs(out.mean(axis=0)).max() < 1e-4
        assert np.abs(np.cov(out, rowvar=False) - np.eye(width)).max() < 1e-4
    reused = whitening_dense(cloud, 5, principal_axes(cloud))  # a caller's own fit of the axes: the same layer
    assert torch.equal(reused.linear.weight, whitening_dense(cloud, 5).linear.weight)
    with pytest.raises(ValueError, match="fitted on 10 texts, but its 12 output directions need more than 12"):
        whitening_dense(cloud[:10])
    with pytest.raises(ValueError, match="at most 12"):
        whitening_dense(cloud, 13)
