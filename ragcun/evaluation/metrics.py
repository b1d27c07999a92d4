"""Retrieval and separation of an embedding model on a BEIR split, from its embeddings.

Every function works on embeddings already computed (``ragcun.encoding.cache``), so one encoding
of a corpus serves every report. Scores are "higher is better": cosine for a cosine model, negative
L2 distance for a euclidean one — each model is judged with the similarity it was built for.
Calibration of those scores is in :mod:`ragcun.evaluation.calibration`, the paired comparison of two
systems in :mod:`ragcun.evaluation.stats`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ragcun.distance import l2_distances
from ragcun.evaluation.beir import BeirSplit
from ragcun.nearest import k_smallest

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
        return -l2_distances(queries, documents)
    raise ValueError(f"Unknown similarity {similarity!r}; expected one of {', '.join(SIMILARITIES)}.")


@dataclass
class Ranking:
    """Each query's top ``depth`` documents (indices into the corpus) and their scores, best first."""

    indices: np.ndarray  # (Q, depth)
    scores: np.ndarray  # (Q, depth)


def rank(queries: np.ndarray, documents: np.ndarray, similarity: str, depth: int = 100, chunk: int = 256) -> Ranking:
    """Exact search, in query chunks so a large corpus never needs a full (Q, D) matrix at once; equal scores keep
    corpus order."""
    all_indices, all_scores = [], []
    for start in range(0, len(queries), chunk):
        costs = -similarity_scores(queries[start : start + chunk], documents, similarity)
        indices, best = k_smallest([(0, costs)], depth)
        all_indices.append(indices)
        all_scores.append(-best)
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
