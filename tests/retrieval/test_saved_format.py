"""Saved retrievers stay readable: folders written by an earlier ragcun (``fixtures/``) load, search to the same
results, and save back to the same bytes, so a save written now is readable by that ragcun too.

The fixtures (numpy flat, numpy binary, FAISS flat, FAISS HNSW) are 22 random 16-d vectors (mean 0.3, so the
corpus calibration and the binary code centre are not trivial) added with ``add_embeddings`` and no model: 20 with
automatic ids and some metadata, two removed, then ids ``"x"`` and ``5`` (which replaces document 5).
``expected_results.json`` holds the settings of each fixture and the hits of the three queries in ``queries.npy``
(top 4), as that ragcun returned them.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from ragcun.retrieval import GaussianRetriever

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "expected_results.json").read_text(encoding="utf-8"))


def as_records(results) -> list[list[dict]]:
    return [
        [
            {
                "id": h.id,
                "document": h.document,
                "distance": h.distance,
                "pvalue": h.pvalue,
                "metadata": h.metadata,
                "calibration": h.calibration,
            }
            for h in hits
        ]
        for hits in results
    ]


def assert_same_results(found: list[list[dict]], expected: list[list[dict]]) -> None:
    assert [[h["id"] for h in hits] for hits in found] == [[h["id"] for h in hits] for hits in expected]
    for found_hits, expected_hits in zip(found, expected):
        for hit, want in zip(found_hits, expected_hits):
            assert (hit["document"], hit["metadata"], hit["calibration"]) == (
                want["document"],
                want["metadata"],
                want["calibration"],
            )
            assert hit["distance"] == pytest.approx(want["distance"], rel=1e-12, abs=1e-12)
            assert hit["pvalue"] == pytest.approx(want["pvalue"], rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_save_loads_and_searches_the_same(name: str) -> None:
    queries = np.load(FIXTURES / "queries.npy", allow_pickle=False)
    retriever = GaussianRetriever.load(FIXTURES / name)
    settings = EXPECTED[name]["settings"]
    assert retriever.index_type == settings["index"] and retriever.backend == settings["backend"]
    assert retriever.calibration == settings["calibration"]
    assert retriever.calibration_min_documents == settings["calibration_min_documents"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fixtures' corpus null is fitted: no fallback to the global null
        found = as_records(retriever.search_embeddings(queries, top_k=4))
    assert_same_results(found, EXPECTED[name]["results"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_save_is_written_back_byte_for_byte(name: str, tmp_path: Path) -> None:
    """Same manifest (keys, order, values) and same files: what this ragcun writes, the earlier one reads."""
    retriever = GaussianRetriever.load(FIXTURES / name)
    saved = retriever.save(tmp_path / name)
    original = sorted(path.name for path in (FIXTURES / name).iterdir())
    assert sorted(path.name for path in saved.iterdir()) == original
    for file in original:
        assert (saved / file).read_bytes() == (FIXTURES / name / file).read_bytes(), file


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_retriever_built_now_matches_the_old_one(name: str) -> None:
    """The same construction today gives the same hits as the saved results (independent of loading)."""
    settings = EXPECTED[name]["settings"]
    rng = np.random.default_rng(2024)
    corpus = rng.standard_normal((22, 16)).astype(np.float32) + 0.3
    queries = rng.standard_normal((3, 16)).astype(np.float32) + 0.3
    assert np.array_equal(queries, np.load(FIXTURES / "queries.npy", allow_pickle=False))
    documents = [f"document {i}" for i in range(22)]
    retriever = GaussianRetriever(**settings)
    retriever.add_embeddings(
        corpus[:20], documents[:20], metadata=[{"n": i} if i % 3 == 0 else None for i in range(20)]
    )
    retriever.remove([3, 7])
    retriever.add_embeddings(corpus[20:], documents[20:], ids=["x", 5])
    assert_same_results(as_records(retriever.search_embeddings(queries, top_k=4)), EXPECTED[name]["results"])
