"""Hard negatives: triplets keep their own when mixed with pairs, and the empty slots are mined from the base."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from sentence_transformers import SentenceTransformer

from ragcun.cached_input import CachedEmbeddings
from ragcun.training.data import load_training_data
from ragcun.training.hard_negatives import mine_missing_negatives


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_pad_negatives_keeps_the_triplets_negatives(tmp_path: Path) -> None:
    triplets = write_jsonl(tmp_path / "trip.jsonl", [{"query": f"t{i}", "pos": f"tp{i}", "neg": f"tn{i}"} for i in range(3)])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": f"p{i}", "pos": f"pp{i}"} for i in range(2)])
    dropped, _ = load_training_data([str(triplets), str(pairs)], shuffle=False)
    assert dropped.column_names == ["anchor", "positive"]  # today's default: the shared shape
    padded, _ = load_training_data([str(triplets), str(pairs)], shuffle=False, pad_negatives=True)
    assert padded.to_list() == [
        *({"anchor": f"t{i}", "positive": f"tp{i}", "negative": f"tn{i}"} for i in range(3)),
        *({"anchor": f"p{i}", "positive": f"pp{i}", "negative": None} for i in range(2)),
    ]


def lookup_ranker(tmp_path: Path, vectors: dict[str, list[float]]) -> SentenceTransformer:
    """A "base" whose embedding of each text is given: ranking by cosine on these vectors."""
    table = np.array(list(vectors.values()), dtype=np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    np.save(tmp_path / "t.npy", table)
    (tmp_path / "t.json").write_text(json.dumps(list(vectors)))
    return SentenceTransformer(modules=[CachedEmbeddings(str(tmp_path / "t.npy"), str(tmp_path / "t.json"))],
                               similarity_fn_name="cosine", device="cpu")


def angle(degrees: float) -> list[float]:
    return [float(np.cos(np.radians(degrees))), float(np.sin(np.radians(degrees))), 0.0]


def test_mining_skips_positives_the_nearest_and_the_near_ties(tmp_path: Path) -> None:
    # query q at 0 degrees, its positive at 10; the other documents by closeness: d1 5, d2 12, d3 30, d4 50, d5 70
    vectors = {"q": angle(0), "pos": angle(10), "d1": angle(5), "d2": angle(12), "d3": angle(30), "d4": angle(50),
               "d5": angle(70), "r": angle(90), "rpos": angle(95), "rneg": angle(170)}
    ranker = lookup_ranker(tmp_path, vectors)
    rows = [{"anchor": "q", "positive": "pos", "negative": None},
            {"anchor": "r", "positive": "rpos", "negative": "rneg"}]  # a triplet: its own negative stays
    rows += [{"anchor": "r", "positive": "rpos", "negative": text} for text in ("d1", "d2", "d3", "d4", "d5")]
    data = Dataset.from_list(rows)
    mined = mine_missing_negatives(data, ranker, 1, range_min=0, relative_margin=None)
    assert mined.to_list() == [{"anchor": "q", "positive": "pos", "negative": "d1"}, *rows[1:]]
    skipped = mine_missing_negatives(data, ranker, 1, range_min=1, relative_margin=None)
    assert skipped[0]["negative"] == "d2"  # the nearest is skipped: often an unlabelled positive
    # relative margin 0.05: a candidate above 0.95 x cos(10) = 0.936 (d1: cos 5, d2: cos 12 = 0.978) is too close
    margin = mine_missing_negatives(data, ranker, 1, range_min=0, relative_margin=0.05)
    assert margin[0]["negative"] == "d3"


def test_mining_fills_extra_slots_and_drops_rows_without_candidates(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    vectors = {"q": angle(0), "pos": angle(10), "d1": angle(40), "d2": angle(60), "own": angle(80),
               "s": angle(180), "sp": angle(0)}
    ranker = lookup_ranker(tmp_path, vectors)
    data = Dataset.from_list([{"anchor": "q", "positive": "pos", "negative": "own"},
                              {"anchor": "q", "positive": "d1", "negative": "d2"}])
    two = mine_missing_negatives(data, ranker, 2, range_min=0, relative_margin=None)
    # every row has 2: its own first; the mined one is never its own again, nor a positive of the same query (d1)
    assert two.to_list() == [{"anchor": "q", "positive": "pos", "negative": "own", "negative_2": "d2"},
                             {"anchor": "q", "positive": "d1", "negative": "d2", "negative_2": "own"}]
    # s scores -1 with its positive: every candidate scores above -1 - 5%, so that row cannot be filled
    data = Dataset.from_list([{"anchor": "q", "positive": "pos", "negative": None},
                              {"anchor": "s", "positive": "sp", "negative": None},
                              {"anchor": "q", "positive": "pos", "negative": "d2"}])
    with caplog.at_level(logging.INFO, logger="ragcun.training.hard_negatives"):
        kept = mine_missing_negatives(data, ranker, 1, range_min=0, relative_margin=0.05)
    assert kept["anchor"] == ["q", "q"] and None not in kept["negative"]
    assert "1 rows had too few candidates" in caplog.text


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(count=0), "positive number"), (dict(range_min=-1), "mine_range_min"), (dict(relative_margin=1.0), "[0, 1)"),
])
def test_mining_refuses_bad_settings(tmp_path: Path, kwargs: dict, message: str) -> None:
    ranker = lookup_ranker(tmp_path, {"q": angle(0), "p": angle(5)})
    data = Dataset.from_list([{"anchor": "q", "positive": "p"}])
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        mine_missing_negatives(data, ranker, **{"count": 1, **kwargs})
