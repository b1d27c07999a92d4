"""Retrieval, separation and calibration of an embedding model on a BEIR split, from its embeddings.

Every function works on embeddings already computed (``ragcun.encoding.cache``), so one encoding
of a corpus serves every report. Scores are "higher is better": cosine for a cosine model, negative
L2 distance for a euclidean one — each model is judged with the similarity it was built for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ragcun.evaluation.beir import BeirSplit
from ragcun.gaussian import CorpusNull, distance_pvalue

SIMILARITIES = ("cosine", "euclidean", "dot")


def similarity_scores(queries: np.ndarray, documents: np.ndarray, similarity: str) -> np.ndarray:
    """(Q, D) scores, higher is more similar."""
    queries, documents = np.asarray(queries, dtype=np.float64), np.asarray(documents, dtype=np.float64)
    if similarity == "cosine":
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(min=1e-12)
        documents = documents / np.linalg.norm(documents, axis=1, keepdims=True).clip(min=1e-12)
        return queries @ documents.T
    if similarity == "dot":
        return queries @ documents.T
    if similarity == "euclidean":
        squared = (queries**2).sum(1)[:, None] + (documents**2).sum(1)[None, :] - 2 * queries @ documents.T
        return -np.sqrt(np.maximum(squared, 0.0))
    raise ValueError(f"Unknown similarity {similarity!r}; expected one of {', '.join(SIMILARITIES)}.")


@dataclass
class Ranking:
    """Each query's top ``depth`` documents (indices into the corpus) and their scores, best first."""

    indices: np.ndarray  # (Q, depth)
    scores: np.ndarray  # (Q, depth)


def rank(queries: np.ndarray, documents: np.ndarray, similarity: str, depth: int = 100, chunk: int = 256) -> Ranking:
    """Exact search, in query chunks so a large corpus never needs a full (Q, D) matrix at once."""
    depth = min(depth, len(documents))
    all_indices, all_scores = [], []
    for start in range(0, len(queries), chunk):
        scores = similarity_scores(queries[start : start + chunk], documents, similarity)
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        all_indices.append(np.take_along_axis(top, order, axis=1))
        all_scores.append(np.take_along_axis(top_scores, order, axis=1))
    return Ranking(np.concatenate(all_indices), np.concatenate(all_scores))


def _run(ranking: Ranking, split: BeirSplit, cutoff: int | None = None) -> dict[str, dict[str, float]]:
    cut = ranking.indices.shape[1] if cutoff is None else cutoff
    return {
        query_id: {split.corpus_ids[j]: float(score) for j, score in zip(ranking.indices[i, :cut], ranking.scores[i, :cut])}
        for i, query_id in enumerate(split.query_ids)
    }


def _qrels(split: BeirSplit) -> dict[str, dict[str, int]]:
    return {q: {d: int(g) for d, g in judged.items()} for q, judged in split.qrels.items()}


def retrieval_metrics(ranking: Ranking, split: BeirSplit, relevance_threshold: int = 1) -> dict[str, float]:
    """nDCG@10 (graded), Recall@10/@100 and MRR@10 (relevant = grade >= threshold), by pytrec_eval.

    pytrec_eval is trec_eval, the implementation BEIR and MTEB report with; ``relevance_level``
    makes the binary measures count only grades >= threshold (TREC DL uses 2) while nDCG keeps the
    grades.
    """
    import pytrec_eval

    qrels = _qrels(split)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10,100"}, relevance_level=relevance_threshold)
    per_query = evaluator.evaluate(_run(ranking, split))
    top10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=relevance_threshold)
    mrr = top10.evaluate(_run(ranking, split, cutoff=10))
    return {
        "ndcg@10": float(np.mean([v["ndcg_cut_10"] for v in per_query.values()])),
        "recall@10": float(np.mean([v["recall_10"] for v in per_query.values()])),
        "recall@100": float(np.mean([v["recall_100"] for v in per_query.values()])),
        "mrr@10": float(np.mean([v["recip_rank"] for v in mrr.values()])),
    }


def ndcg_per_query(ranking: Ranking, split: BeirSplit) -> dict[str, float]:
    """nDCG@10 of each query (pytrec_eval, graded): the unit a paired comparison of two systems needs."""
    import pytrec_eval

    scores = pytrec_eval.RelevanceEvaluator(_qrels(split), {"ndcg_cut.10"}).evaluate(_run(ranking, split))
    return {query_id: values["ndcg_cut_10"] for query_id, values in scores.items()}


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

    Bootstrap over queries for the interval; random sign flips of the per-query differences for a
    two-sided p-value (the paired randomization test common in IR evaluation).
    """
    if set(a) != set(b):
        raise ValueError(f"The two systems were scored on different queries ({len(a)} vs {len(b)}); score both on one split.")
    if not a:
        raise ValueError("No queries to compare.")
    differences = np.array([b[q] - a[q] for q in sorted(a)])
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), (resamples, len(differences)))].mean(1)
    flipped = (differences * rng.choice([-1.0, 1.0], (resamples, len(differences)))).mean(1)
    observed = differences.mean()
    p_value = (1 + np.count_nonzero(np.abs(flipped) >= abs(observed) - 1e-12)) / (resamples + 1)
    return PairedDifference(float(observed), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)),
                            float(p_value), len(differences))


def relevance_labels(ranking: Ranking, split: BeirSplit, relevance_threshold: int = 1) -> np.ndarray:
    """(Q, depth) booleans: is each ranked document relevant to its query."""
    labels = np.zeros(ranking.indices.shape, dtype=bool)
    for i, query_id in enumerate(split.query_ids):
        judged = split.qrels.get(query_id, {})
        for k, j in enumerate(ranking.indices[i]):
            labels[i, k] = judged.get(split.corpus_ids[j], 0) >= relevance_threshold
    return labels


def separation(ranking: Ranking, labels: np.ndarray, top_negatives: int = 10) -> dict[str, float]:
    """How far the relevant documents stand out from the strongest non-relevant ones, per query.

    - ``raw``: best relevant score minus the mean of the ``top_negatives`` best non-relevant scores
      (the seed's definition). Its unit is the similarity's own (cosine vs L2 distance), so raw
      figures of different similarities are NOT comparable.
    - ``standardized``: the same gap divided by the standard deviation of the query's candidate
      scores (a d′): unit-free, comparable across similarities. Lead with this one.
    - ``auc``: probability that a relevant candidate outscores a non-relevant one among the query's
      top candidates (Mann–Whitney), also unit-free.
    Queries without a relevant document among their candidates are left out (counted in ``queries``).
    """
    raw, standardized, auc = [], [], []
    for scores, relevant in zip(ranking.scores, labels):
        if not relevant.any() or relevant.all():
            continue
        negatives = np.sort(scores[~relevant])[::-1][:top_negatives]
        gap = scores[relevant].max() - negatives.mean()
        raw.append(gap)
        spread = scores.std()
        standardized.append(gap / spread if spread > 0 else 0.0)
        auc.append(stats.mannwhitneyu(scores[relevant], scores[~relevant], alternative="greater").statistic
                   / (relevant.sum() * (~relevant).sum()))
    return {
        "separation_standardized": float(np.mean(standardized)) if standardized else float("nan"),
        "separation_auc": float(np.mean(auc)) if auc else float("nan"),
        "separation_raw": float(np.mean(raw)) if raw else float("nan"),
        "separation_queries": len(raw),
    }


def chi2_pvalues(distances: np.ndarray, dim: int) -> np.ndarray:
    """The global null's p-values (independent q, d ~ N(0, I_dim)): :func:`ragcun.gaussian.distance_pvalue`."""
    return np.asarray(distance_pvalue(distances, dim), dtype=np.float64)


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
    null_distances = np.linalg.norm(queries[q_index].astype(np.float64) - documents[d_index], axis=1)
    candidate_distances = np.linalg.norm(
        queries[:, None, :].astype(np.float64) - documents[ranking.indices], axis=2
    )
    corpus = CorpusNull(dim, min_documents=2)
    corpus.add(documents)
    nulls = {
        "": (chi2_pvalues(null_distances, dim), chi2_pvalues(candidate_distances, dim)),
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


def expected_calibration_error(probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy − confidence| over equal-width probability bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(outcomes[members].mean() - probabilities[members].mean())
    return float(error)


@dataclass
class ReliabilityCurve:
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray


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
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    confidence = np.array([probabilities[which == b].mean() if counts[b] else np.nan for b in range(bins)])
    accuracy = np.array([y_test[which == b].mean() if counts[b] else np.nan for b in range(bins)])
    metrics = {
        "ece": expected_calibration_error(probabilities, y_test.astype(float), bins),
        "brier": float(np.mean((probabilities - y_test) ** 2)),
    }
    return metrics, ReliabilityCurve(confidence, accuracy, counts)


def whitening(documents: np.ndarray, output_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Post-hoc PCA whitening fitted on a corpus: what a user could do instead of training.

    Returns (weight, bias) with ``x @ weight.T + bias`` ~ N(0, I) on that corpus. A corpus smaller
    than the embedding width can only be whitened to ``len(documents) - 1`` dimensions.
    """
    from ragcun.model import fit_projection

    dim = min(output_dim or documents.shape[1], len(documents) - 1)
    weight, bias = fit_projection(documents, dim, "whiten")
    return weight.numpy().astype(np.float64), bias.numpy().astype(np.float64)
