import math

import numpy as np
import pytest
import torch
from scipy import integrate

from ragcun.losses import EppsPulley
from ragcun.losses.epps_pulley import epps_pulley_expected_null


def quad_statistic(sample: np.ndarray, t_max: float) -> float:
    """The same statistic by adaptive quadrature, written independently of the module."""

    def integrand(t: float) -> float:
        cos_mean = np.cos(t * sample).mean()
        sin_mean = np.sin(t * sample).mean()
        return ((cos_mean - math.exp(-t * t / 2)) ** 2 + sin_mean**2) * math.exp(-t * t / 2)

    value, _ = integrate.quad(integrand, -t_max, t_max, limit=200)
    return len(sample) * value


SAMPLES = {
    "gaussian": np.random.default_rng(0).normal(size=64),
    "shifted": np.random.default_rng(1).normal(loc=0.7, size=100),
    "scaled": np.random.default_rng(2).normal(scale=2.0, size=50),
    "uniform": np.random.default_rng(3).uniform(-2, 2, size=80),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_fine_quadrature_matches_scipy(name: str) -> None:
    sample = SAMPLES[name]
    fine = EppsPulley(num_knots=2001, t_max=3.0)(torch.tensor(sample, dtype=torch.float64)).item()
    assert fine == pytest.approx(quad_statistic(sample, 3.0), rel=1e-5)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_default_17_knots_close_to_scipy(name: str) -> None:
    sample = SAMPLES[name]
    default = EppsPulley()(torch.tensor(sample, dtype=torch.float64)).item()
    assert default == pytest.approx(quad_statistic(sample, 3.0), rel=2e-2)


def test_t_max_is_configurable() -> None:
    sample = SAMPLES["shifted"]
    value = EppsPulley(num_knots=801, t_max=5.0)(torch.tensor(sample, dtype=torch.float64)).item()
    assert value == pytest.approx(quad_statistic(sample, 5.0), rel=1e-5)


def test_columns_are_independent_statistics() -> None:
    x = torch.tensor(np.stack([SAMPLES["gaussian"][:50], SAMPLES["scaled"][:50]], axis=1))
    both = EppsPulley()(x)
    assert both.shape == (2,)
    assert both[0].item() == pytest.approx(EppsPulley()(x[:, 0]).item())
    assert both[1].item() == pytest.approx(EppsPulley()(x[:, 1]).item())


def test_null_expectation_matches_simulation() -> None:
    rng = np.random.default_rng(7)
    statistic = EppsPulley()(torch.tensor(rng.normal(size=(200, 2000)))).mean().item()
    assert statistic == pytest.approx(epps_pulley_expected_null(), rel=0.05)


def test_bad_quadrature_settings() -> None:
    with pytest.raises(ValueError, match="num_knots"):
        EppsPulley(num_knots=1)
    with pytest.raises(ValueError, match="t_max"):
        EppsPulley(t_max=0)
