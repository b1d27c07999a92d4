import math

import numpy as np
import pytest
from scipy import stats

from ragcun.evaluation.beir import BeirSplit
from ragcun.evaluation.calibration import expected_calibration_error, logistic_calibration, null_calibration
from ragcun.evaluation.metrics import (
    Ranking,
    ndcg_per_query,
    rank,
    relevance_labels,
    retrieval_metrics,
    separation,
    similarity_scores,
)
from ragcun.evaluation.stats import paired_difference
from ragcun.gaussian import distance_pvalue


def hand_split() -> BeirSplit:
    docs = [f"d{i}" for i in range(12)]
    return BeirSplit(
        corpus_ids=docs, corpus_texts=docs, query_ids=["q1", "q2"], query_texts=["q1", "q2"],
        qrels={"q1": {"d0": 1, "d3": 1}, "q2": {"d5": 2, "d7": 1}},
    )


def ranking_from(orders: list[list[int]]) -> Ranking:
    indices = np.array(orders)
    scores = -np.tile(np.arange(indices.shape[1], dtype=float), (len(orders), 1))  # strictly decreasing
    return Ranking(indices, scores)


def test_metrics_on_hand_made_rankings() -> None:
    split = hand_split()
    # q1: relevant d0 at rank 2, d3 at rank 5; q2: d5 (grade 2) at rank 1, d7 (grade 1) at rank 11 (beyond 10)
    ranking = ranking_from([[1, 0, 2, 4, 3, 5, 6, 7, 8, 9, 10, 11], [5, 0, 1, 2, 3, 4, 6, 8, 9, 10, 7, 11]])
    metrics = retrieval_metrics(ranking, split)
    dcg_q1 = 1 / math.log2(3) + 1 / math.log2(6)
    ndcg_q1 = dcg_q1 / (1 + 1 / math.log2(3))
    ndcg_q2 = 2 / (2 + 1 / math.log2(3))  # trec_eval's gain is the grade itself: 2 at rank 1; ideal 2 then 1
    assert metrics["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-6)
    assert metrics["mrr@10"] == pytest.approx((1 / 2 + 1) / 2, abs=1e-9)
    assert metrics["recall@10"] == pytest.approx((1 + 0.5) / 2, abs=1e-9)
    assert metrics["recall@100"] == pytest.approx(1.0)
    # with TREC DL's threshold only d5 counts as relevant for q2; q1's grades are 1, so it has none
    strict = retrieval_metrics(ranking, split, relevance_threshold=2)
    assert strict["mrr@10"] == pytest.approx(1.0 / 2, abs=1e-9)


def test_ndcg_per_query_matches_the_mean() -> None:
    split = hand_split()
    ranking = ranking_from([[1, 0, 2, 4, 3, 5, 6, 7, 8, 9, 10, 11], [5, 0, 1, 2, 3, 4, 6, 8, 9, 10, 7, 11]])
    per_query = ndcg_per_query(ranking, split)
    assert set(per_query) == {"q1", "q2"}
    assert per_query["q2"] == pytest.approx(2 / (2 + 1 / math.log2(3)), abs=1e-6)
    assert np.mean(list(per_query.values())) == pytest.approx(retrieval_metrics(ranking, split)["ndcg@10"], abs=1e-12)


def test_paired_difference_tells_a_real_gain_from_noise() -> None:
    rng = np.random.default_rng(0)
    queries = [f"q{i}" for i in range(300)]
    a = {q: float(v) for q, v in zip(queries, rng.uniform(0, 1, 300))}
    better = {q: min(1.0, v + 0.05 + float(rng.normal(0, 0.05))) for q, v in a.items()}
    noise = {q: v + float(rng.normal(0, 0.05)) for q, v in a.items()}
    gain = paired_difference(a, better)
    assert gain.queries == 300 and 0.03 < gain.mean < 0.06 and gain.low > 0 and gain.p_value < 0.001
    null = paired_difference(a, noise)
    assert null.low < 0 < null.high and null.p_value > 0.05
    with pytest.raises(ValueError, match="different queries"):
        paired_difference(a, {"q0": 1.0})


def test_exact_ranking_by_each_similarity() -> None:
    rng = np.random.default_rng(0)
    queries, documents = rng.normal(size=(5, 8)), rng.normal(size=(40, 8))
    for similarity in ("cosine", "euclidean", "dot"):
        scores = similarity_scores(queries, documents, similarity)
        ranking = rank(queries, documents, similarity, depth=7, chunk=2)
        assert np.array_equal(ranking.indices, np.argsort(-scores, axis=1)[:, :7])
    distances = np.linalg.norm(queries[:, None] - documents[None], axis=2)
    assert np.allclose(similarity_scores(queries, documents, "euclidean"), -distances)
    with pytest.raises(ValueError, match="Unknown similarity"):
        similarity_scores(queries, documents, "manhattan")


def test_separation_known_answers() -> None:
    scores = np.array([[10.0, 4.0, 2.0, 0.0]])
    labels = np.array([[True, False, False, False]])
    result = separation(Ranking(np.zeros((1, 4), dtype=int), scores), labels, top_negatives=2)
    assert result["separation_raw"] == pytest.approx(10 - 3)
    assert result["separation_standardized"] == pytest.approx(7 / scores.std())
    assert result["separation_auc"] == pytest.approx(1.0)
    # a relevant document below every non-relevant one
    worst = separation(Ranking(np.zeros((1, 4), dtype=int), scores), labels[:, ::-1].copy(), top_negatives=2)
    assert worst["separation_auc"] == pytest.approx(0.0) and worst["separation_raw"] < 0


def test_standardized_separation_is_unit_free() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(20, 50))
    labels = np.zeros_like(scores, dtype=bool)
    labels[:, 0] = True
    scores[:, 0] += 2.0
    ranking = Ranking(np.zeros_like(scores, dtype=int), scores)
    scaled = Ranking(ranking.indices, 37.0 * scores - 5.0)
    a, b = separation(ranking, labels), separation(scaled, labels)
    assert b["separation_raw"] == pytest.approx(37 * a["separation_raw"])
    assert b["separation_standardized"] == pytest.approx(a["separation_standardized"])
    assert b["separation_auc"] == pytest.approx(a["separation_auc"])


def test_global_null_pvalues_uniform_under_the_null() -> None:
    rng = np.random.default_rng(2)
    dim = 64
    q, d = rng.normal(size=(3000, dim)), rng.normal(size=(3000, dim))
    p = distance_pvalue(np.linalg.norm(q - d, axis=1), dim)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert distance_pvalue(np.array([0.1]), dim)[0] < 1e-30  # a near-duplicate is "closer than chance"


def test_null_calibration_on_gaussian_embeddings() -> None:
    rng = np.random.default_rng(3)
    dim, n_docs, n_queries = 32, 400, 40
    documents = rng.normal(size=(n_docs, dim))
    relevant = rng.choice(n_docs, size=n_queries, replace=False)
    queries = np.sqrt(1 - 0.3**2) * documents[relevant] + 0.3 * rng.normal(size=(n_queries, dim))  # related pairs
    split = BeirSplit([f"d{i}" for i in range(n_docs)], [""] * n_docs, [f"q{i}" for i in range(n_queries)],
                      [""] * n_queries, {f"q{i}": {f"d{j}": 1} for i, j in enumerate(relevant)})
    ranking = rank(queries, documents, "euclidean", depth=20)
    labels = relevance_labels(ranking, split)
    result = null_calibration(queries, documents, ranking, labels, split, pairs=4000)
    assert result["null_ks"] < 0.05  # random pairs follow the χ² null
    # at alpha = 0.01 the null itself lets 1% of the 399 unrelated documents through: ~4 per query
    expected_precision = 1 / (1 + 0.01 * (n_docs - 1))
    assert result["pvalue_recall"] == pytest.approx(1.0)
    assert result["pvalue_precision"] == pytest.approx(expected_precision, rel=0.3)
    strict = null_calibration(queries, documents, ranking, labels, split, pairs=4000, alpha=1e-4)
    assert strict["pvalue_recall"] == pytest.approx(1.0) and strict["pvalue_precision"] > 0.9
    shifted = null_calibration(queries + 1.0, documents, ranking, labels, split, pairs=4000)
    assert shifted["null_ks"] > 0.3  # a shifted cloud does not
    # The corpus null conditions on the query: a shifted query cloud still fits it.
    assert result["null_ks_corpus"] < 0.05 and shifted["null_ks_corpus"] < 0.05


def test_null_calibration_on_one_domain_of_a_gaussian_world() -> None:
    """A corpus that is one domain — off-centre, narrower — fails the global null and fits the corpus one."""
    rng = np.random.default_rng(4)
    dim, n_docs, n_queries = 32, 600, 60
    centre = 3.0 * rng.normal(size=dim) / np.sqrt(dim)
    documents = centre + 0.6 * rng.normal(size=(n_docs, dim))
    relevant = rng.choice(n_docs, size=n_queries, replace=False)
    queries = centre + 0.6 * (0.95 * (documents[relevant] - centre) / 0.6 + np.sqrt(1 - 0.95**2) * rng.normal(size=(n_queries, dim)))
    split = BeirSplit([f"d{i}" for i in range(n_docs)], [""] * n_docs, [f"q{i}" for i in range(n_queries)],
                      [""] * n_queries, {f"q{i}": {f"d{j}": 1} for i, j in enumerate(relevant)})
    ranking = rank(queries, documents, "euclidean", depth=20)
    result = null_calibration(queries, documents, ranking, relevance_labels(ranking, split), split, pairs=4000)
    assert result["null_ks"] > 0.9 and result["null_ks_corpus"] < 0.05
    # Globally all 20 candidates are "closer than chance"; the corpus null lets through the relevant document
    # and the 1% of the 599 unrelated ones it should.
    assert result["pvalue_precision"] == pytest.approx(1 / 20, rel=0.05)
    assert result["pvalue_precision_corpus"] == pytest.approx(1 / (1 + 0.01 * (n_docs - 1)), rel=0.3)
    assert result["pvalue_recall_corpus"] > 0.9


def test_expected_calibration_error_known_answers() -> None:
    assert expected_calibration_error(np.array([0.25, 0.25, 0.25, 0.25]), np.array([1.0, 0, 0, 0])) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([0.9, 0.9]), np.array([0.0, 0.0])) == pytest.approx(0.9)


def test_logistic_calibration_is_well_calibrated_on_logistic_data() -> None:
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(400, 25))
    labels = rng.random(scores.shape) < 1 / (1 + np.exp(-(3 * scores - 2)))
    metrics, curve = logistic_calibration(Ranking(np.zeros_like(scores, dtype=int), scores), labels)
    assert metrics["ece"] < 0.03
    base_rate = labels.mean()
    assert metrics["brier"] < base_rate * (1 - base_rate)  # better than always predicting the base rate
    assert curve.counts.sum() == labels[200:].size


def test_paired_difference_is_seeded_and_exact_on_few_queries() -> None:
    rng = np.random.default_rng(5)
    a = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, 40))}
    b = {q: v + float(rng.normal(0.02, 0.05)) for q, v in a.items()}
    assert paired_difference(a, b, resamples=2000, seed=3) == paired_difference(a, b, resamples=2000, seed=3)
    assert paired_difference(a, b, resamples=2000, seed=3) != paired_difference(a, b, resamples=2000, seed=4)
    # two queries: all four sign patterns are enumerated; only the observed one reaches its mean on each side
    two = paired_difference({"q1": 0.1, "q2": 0.2}, {"q1": 0.3, "q2": 0.25})
    assert two.mean == pytest.approx(0.125) and two.p_value == pytest.approx(0.5)
    assert two.low == pytest.approx(0.05) and two.high == pytest.approx(0.2)
    one = paired_difference({"q1": 0.1}, {"q1": 0.4})
    assert (one.mean, one.low, one.high, one.p_value, one.queries) == pytest.approx((0.3, 0.3, 0.3, 1.0, 1))


def test_expected_calibration_error_is_the_binned_gap() -> None:
    rng = np.random.default_rng(6)
    probabilities = rng.uniform(size=2000)
    outcomes = rng.uniform(size=2000) < probabilities**1.5
    which = np.minimum((probabilities * 10).astype(int), 9)  # no probability lies on an edge here
    expected = sum((which == k).mean() * abs(outcomes[which == k].mean() - probabilities[which == k].mean())
                   for k in range(10))
    assert expected_calibration_error(probabilities, outcomes) == pytest.approx(expected, rel=1e-12)
