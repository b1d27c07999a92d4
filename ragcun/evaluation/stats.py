"""Is one system better than another on the same queries? A paired comparison of per-query scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

# Resamples drawn per batch: bounds memory at batch × queries values whatever ``resamples`` is.
_BATCH = 1000


@dataclass
class PairedDifference:
    """Mean per-query difference b − a, its paired-bootstrap 95% interval and a sign-flip p-value."""

    mean: float
    low: float
    high: float
    p_value: float
    queries: int


def paired_difference(a: dict[str, float], b: dict[str, float], resamples: int = 10_000, seed: int = 0) -> PairedDifference:
    """Is system b better than a on the same queries, beyond what the query sample resolves?

    Both tests work on the per-query differences b − a, so the pairing is kept: a percentile bootstrap over
    queries for the interval (``scipy.stats.bootstrap``), and random sign flips of the differences for a
    two-sided p-value (``scipy.stats.permutation_test`` with ``permutation_type="samples"`` on one sample, the
    paired randomization test common in IR evaluation; exact when 2^queries <= resamples). One generator seeded
    with ``seed`` draws both, so the result is reproducible.
    """
    if set(a) != set(b):
        raise ValueError(f"The two systems were scored on different queries ({len(a)} vs {len(b)}); score both on one split.")
    if not a:
        raise ValueError("No queries to compare.")
    differences = np.array([b[q] - a[q] for q in sorted(a)])
    observed = float(differences.mean())
    if len(differences) == 1:  # scipy needs two observations; one query resamples to itself, and either sign ties
        return PairedDifference(observed, observed, observed, 1.0, 1)
    rng = np.random.default_rng(seed)
    interval = stats.bootstrap((differences,), np.mean, n_resamples=resamples, batch=_BATCH, vectorized=True,
                               confidence_level=0.95, method="percentile", random_state=rng).confidence_interval
    flips = stats.permutation_test((differences,), np.mean, permutation_type="samples", n_resamples=resamples,
                                   batch=_BATCH, vectorized=True, alternative="two-sided", random_state=rng)
    return PairedDifference(observed, float(interval.low), float(interval.high), float(flips.pvalue), len(differences))
