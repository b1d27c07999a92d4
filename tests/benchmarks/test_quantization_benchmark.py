"""benchmarks/quantization.py on a synthetic corpus whose answers are known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ragcun.evaluation.beir import BeirSplit

SPEC = importlib.util.spec_from_file_location("quantization", Path(__file__).resolve().parents[2] / "benchmarks" / "quantization.py")
quantization = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(quantization)


def topic_split(offset: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, BeirSplit]:
    """Topics of 10 N(0, I)-marginal documents (shifted by ``offset`` in every coordinate); one query per topic,
    its topic's documents relevant."""
    rng = np.random.default_rng(seed)
    topics, per_topic, dim = 60, 10, 64
    centres = rng.normal(size=(topics, dim))
    documents = 0.8 * np.repeat(centres, per_topic, axis=0) + 0.6 * rng.normal(size=(topics * per_topic, dim)) + offset
    queries = 0.8 * centres + 0.6 * rng.normal(size=(topics, dim)) + offset
    split = BeirSplit([f"d{i}" for i in range(len(documents))], [""] * len(documents), [f"q{t}" for t in range(topics)],
                      [""] * topics, {f"q{t}": {f"d{t * per_topic + j}": 1 for j in range(per_topic)} for t in range(topics)})
    return queries.astype(np.float32), documents.astype(np.float32), split


def by_code(rows: list[dict]) -> dict[str, dict]:
    return {row["code"]: row for row in rows}


def test_centred_signs_recover_an_off_centre_corpus_that_raw_signs_lose() -> None:
    queries, documents, split = topic_split(offset=3.0)
    rows = by_code(quantization.compressed_rows(queries, documents, "euclidean", split))
    assert rows["float32"]["recall@10_vs_exact"] == 1.0 and rows["float32"]["bytes_per_doc"] == 4 * 64
    assert rows["sign"]["bytes_per_doc"] == 8 and rows["int8-st"]["bytes_per_doc"] == 64
    assert rows["sign"]["bit_balance"] > 0.45  # nearly every bit is 1: the code carries almost nothing
    assert rows["sign-centred"]["bit_balance"] < 0.1
    assert rows["sign-centred+rerank 10"]["recall@10_vs_exact"] >= 0.95 > 0.5 > rows["sign+rerank 10"]["recall@10_vs_exact"]
    # Reranking more candidates never loses recall, and int8 with the corpus as calibration stays near exact.
    centred = [rows[f"sign-centred+rerank {f}"]["recall@10_vs_exact"] for f in quantization.RERANK_FACTORS]
    assert centred == sorted(centred)
    assert rows["int8-st"]["recall@10_vs_exact"] > 0.9


def test_fixed_int8_range_suits_n01_embeddings() -> None:
    queries, documents, split = topic_split(offset=0.0)
    rows = by_code(quantization.compressed_rows(queries, documents, "euclidean", split))
    assert rows["int8-fixed"]["recall@10_vs_exact"] > 0.95
    assert rows["int8-fixed"]["ndcg@10"] == pytest.approx(rows["float32"]["ndcg@10"], abs=0.02)
    # Scaled far below N(0, 1) (a cosine model's unit vectors), the fixed range rounds most coordinates to 0.
    small = by_code(quantization.compressed_rows(queries / 300, documents / 300, "euclidean", split))
    assert small["int8-fixed"]["recall@10_vs_exact"] < rows["int8-fixed"]["recall@10_vs_exact"] - 0.2
