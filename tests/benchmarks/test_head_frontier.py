"""benchmarks/head_frontier.py: the post-hoc tempered whitening the trained heads are compared with."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location("head_frontier", Path(__file__).resolve().parents[2] / "benchmarks" / "head_frontier.py")
head_frontier = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(head_frontier)


def anisotropic(n: int = 4000, dim: int = 12, seed: int = 0) -> np.ndarray:
    """Correlated coordinates with spreads from 0.1 to 3, one coordinate constant (as MiniLM has three)."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) * np.linspace(0.1, 3.0, dim)
    data = rng.normal(size=(n, dim)) @ mixing.T + 5.0
    data[:, 0] = 1.5
    return data


def covariance_after(train: np.ndarray, gamma: float, output_dim: int | None) -> np.ndarray:
    weight, bias = head_frontier.tempered_whitening(train, gamma, output_dim)
    out = train @ weight.double().numpy().T + bias.double().numpy()
    assert np.abs(out.mean(axis=0)).max() < 1e-4  # centred (float32 weights)
    return np.cov(out, rowvar=False)


def test_full_whitening_on_the_varying_axes_is_the_identity() -> None:
    train = anisotropic()
    covariance = covariance_after(train, 1.0, output_dim=11)  # the constant coordinate dropped
    np.testing.assert_allclose(covariance, np.eye(11), atol=1e-4)


def test_gamma_tempers_the_spectrum_and_keeps_unit_average_variance() -> None:
    train = anisotropic()
    spreads = {}
    for gamma in (0.0, 0.5, 1.0):
        eigenvalues = np.linalg.eigvalsh(covariance_after(train, gamma, output_dim=11))
        assert eigenvalues.mean() == pytest.approx(1.0, rel=1e-4)
        spreads[gamma] = eigenvalues.max() / eigenvalues.min()
    assert spreads[0.0] > spreads[0.5] > spreads[1.0] == pytest.approx(1.0, rel=1e-3)
    # γ 0 is the base's own geometry up to one scale: distances keep their ratios.
    weight, _ = head_frontier.tempered_whitening(train, 0.0, None)
    a, b, c = train[:3]
    ratio = np.linalg.norm(weight.double().numpy() @ (a - b)) / np.linalg.norm(weight.double().numpy() @ (a - c))
    assert ratio == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(a - c), rel=1e-5)
