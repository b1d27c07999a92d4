"""The population Epps–Pulley distance ∫|φ − φ_N(0,1)|² w(t) dt of unit-variance marginals, beside ``SHAPE_BOUND``.

``is_gaussian`` allows a direction (T − T_null)/N ≤ SHAPE_BOUND, where T, the statistic of N draws, estimates N times
this distance. The distances below (EppsPulley's quadrature; exact characteristic functions where they are known,
Student's t from 2,000,000 draws) say which shapes that bound passes and which it refuses.

    python benchmarks/shape_bound.py
"""

from __future__ import annotations

import numpy as np

from ragcun.normality import EP_KNOTS, EP_T_MAX, SHAPE_BOUND


def population_distance(characteristic: np.ndarray, knots: np.ndarray) -> float:
    """The quadrature EppsPulley uses (trapezoid on [0, T_MAX], doubled, weight e^{−t²/2}), divided by N."""
    step = knots[1] - knots[0]
    weights = np.full(len(knots), step)
    weights[[0, -1]] = step / 2
    weights *= 2 * np.exp(-knots**2 / 2)
    return float((weights * np.abs(characteristic - np.exp(-knots**2 / 2)) ** 2).sum())


def main() -> None:
    t = np.linspace(0.0, EP_T_MAX, EP_KNOTS)
    rng = np.random.default_rng(0)

    def empirical(draws: np.ndarray) -> np.ndarray:
        draws = (draws - draws.mean()) / draws.std()
        return np.cos(np.outer(t, draws)).mean(axis=1) + 1j * np.sin(np.outer(t, draws)).mean(axis=1)

    a = np.sqrt(3.0)  # uniform on [−√3, √3]
    shapes = {
        "uniform": np.where(t == 0, 1.0, np.sin(a * t) / np.where(t == 0, 1.0, a * t)),
        "Laplace": 1 / (1 + t**2 / 2),
        **{f"Student t, {df} d.o.f.": empirical(rng.standard_t(df, 2_000_000)) for df in (5, 10, 30)},
        # ±m plus Gaussian noise of variance 1 − m²: two clusters, whitened (bimodal once m > 0.71)
        **{f"two clusters at ±{m}": np.cos(m * t) * np.exp(-(1 - m * m) * t**2 / 2) for m in (0.5, 0.7, 0.8, 0.9)},
    }
    print(f"SHAPE_BOUND = {SHAPE_BOUND}: a marginal passes when its distance is at most this (plus sampling noise)")
    for name, characteristic in shapes.items():
        distance = population_distance(characteristic, t)
        print(f"{name:<26}{distance:>10.5f}  {'passes' if distance <= SHAPE_BOUND else 'fails'}")


if __name__ == "__main__":
    main()
