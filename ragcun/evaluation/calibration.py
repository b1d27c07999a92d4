"""Calibration of an embedding model's scores: p-value nulls and a logistic P(relevant | score).

Two questions, both on a ranking already computed (:mod:`ragcun.evaluation.metrics`): do the model's distances
follow the Gaussian nulls its p-values assume (:mod:`ragcun.gaussian`), and how well does one monotone map turn
its scores into probabilities (ECE, Brier, reliability curve)?
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.calibration import calibration_curve

from ragcun.distance import paired_squared_l2
from ragcun.evaluation.beir import BeirSplit
from ragcun.evaluation.metrics import Ranking
from ragcun.gaussian import CorpusNull, distance_pvalue


def null_calibration(
    queries: np.ndarray, documents: np.ndarray, ranking: Ranking, labels: np.ndarray, split: BeirSplit,
    pairs: int = 5000, alpha: float = 0.01, seed: int = 0,
) -> dict[str, float]:
    """How well each p-value null fits, and what the threshold p < alpha retrieves with it.

    Two nulls (:mod:`ragcun.gaussian`): the global one (N(0, I) query and document, ‖q − d‖²/2 ~ χ²_D) and
    the corpus one (a document of this corpus, N(μ, σ² I) with its own mean and spread, given the query), fitted on
    every document of the corpus. For each, with the suffix ``_corpus`` for the second:

    - ``null_ks``: Kolmogorov–Smirnov statistic of the p-values of random (query, non-relevant
      document) pairs against Uniform(0, 1): 0 when the model's distances follow the null exactly.
    - ``pvalue_precision`` / ``pvalue_recall``: among each query's ranked candidates, call
      "relevant" every document with p < alpha; precision over those calls, recall over all judged
      relevant documents. Computed on un-normalized embeddings, as the model outputs them.
    """
    rng = np.random.default_rng(seed)
    dim = queries.shape[1]
    q_index = rng.integers(0, len(queries), size=pairs * 2)
    d_index = rng.integers(0, len(documents), size=pairs * 2)
    related = np.array([split.qrels.get(split.query_ids[q], {}).get(split.corpus_ids[d], 0) > 0
                        for q, d in zip(q_index, d_index)])
    q_index, d_index = q_index[~related][:pairs], d_index[~related][:pairs]
    null_distances = np.sqrt(paired_squared_l2(queries[q_index].astype(np.float64), documents[d_index]))
    candidate_distances = np.sqrt(paired_squared_l2(queries[:, None, :].astype(np.float64), documents[ranking.indices]))
    corpus = CorpusNull(dim, min_documents=2)
    corpus.add(documents)
    nulls = {
        "": (distance_pvalue(null_distances, dim), distance_pvalue(candidate_distances, dim)),
        "_corpus": (corpus.pvalues(null_distances[:, None], queries[q_index])[:, 0],
                    corpus.pvalues(candidate_distances, queries)),
    }
    total_relevant = sum(sum(1 for g in judged.values() if g > 0) for judged in split.qrels.values())
    metrics: dict[str, float] = {"pvalue_alpha": alpha}
    for suffix, (null_p, candidate_p) in nulls.items():
        called = candidate_p < alpha
        true_calls = int((called & labels).sum())
        metrics.update({
            f"null_ks{suffix}": float(stats.kstest(null_p, "uniform").statistic),
            f"null_median_pvalue{suffix}": float(np.median(null_p)),
            f"pvalue_precision{suffix}": float(true_calls / called.sum()) if called.any() else float("nan"),
            f"pvalue_recall{suffix}": float(true_calls / total_relevant) if total_relevant else float("nan"),
        })
    return metrics


@dataclass
class ReliabilityCurve:
    """Per equal-width probability bin: mean predicted probability, observed fraction relevant, and size.

    One entry per bin, empty bins included (NaN confidence and accuracy, count 0), so curves of different
    models share their bins.
    """

    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray


def reliability_curve(probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10) -> ReliabilityCurve:
    """The reliability curve of ``probabilities`` against binary ``outcomes`` on ``bins`` equal-width bins of [0, 1].

    sklearn's ``calibration_curve`` gives the non-empty bins' means; the bin sizes ECE weighs them by are counted
    with its own rule (``searchsorted`` on the inner edges: a probability exactly on an edge joins the lower bin,
    where ``np.histogram`` and earlier ragcun versions put it in the upper one), so both always describe
    the same bins. ``outcomes`` must be binary (0/1), as sklearn requires.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], probabilities), minlength=bins)
    accuracy_seen, confidence_seen = calibration_curve(np.asarray(outcomes), probabilities, n_bins=bins,
                                                       strategy="uniform")
    confidence, accuracy = np.full(bins, np.nan), np.full(bins, np.nan)
    filled = counts > 0
    confidence[filled], accuracy[filled] = confidence_seen, accuracy_seen
    return ReliabilityCurve(confidence, accuracy, counts)


def expected_calibration_error(probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy − confidence| over equal-width probability bins, weighted by bin size."""
    return _expected_calibration_error(reliability_curve(probabilities, outcomes, bins))


def _expected_calibration_error(curve: ReliabilityCurve) -> float:
    filled = curve.counts > 0
    weights = curve.counts[filled] / curve.counts.sum()
    return float(np.sum(weights * np.abs(curve.accuracy[filled] - curve.confidence[filled])))


def logistic_calibration(ranking: Ranking, labels: np.ndarray, seed: int = 0, bins: int = 10) -> tuple[dict[str, float], ReliabilityCurve]:
    """P(relevant | score) from a logistic fit on half of the queries, scored on the other half.

    Every model gets the same treatment (a 1-D logistic on its own score), so ECE and Brier compare
    how well a single threshold-like map turns each model's scores into probabilities.
    """
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    fit_rows, test_rows = order[: len(order) // 2], order[len(order) // 2 :]
    x_fit, y_fit = ranking.scores[fit_rows].reshape(-1, 1), labels[fit_rows].reshape(-1)
    x_test, y_test = ranking.scores[test_rows].reshape(-1, 1), labels[test_rows].reshape(-1)
    if y_fit.all() or not y_fit.any():
        raise ValueError("The calibration fit needs both relevant and non-relevant candidates; the split has only one kind.")
    model = LogisticRegression(C=1e4).fit(x_fit, y_fit)
    probabilities = model.predict_proba(x_test)[:, 1]
    curve = reliability_curve(probabilities, y_test, bins)
    metrics = {
        "ece": _expected_calibration_error(curve),
        "brier": float(np.mean((probabilities - y_test) ** 2)),
    }
    return metrics, curve
