"""ragcun.training.data: every supported input becomes anchor / positive / negative... columns, and bad input fails early."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from ragcun.training.data import DataSource, load_training_data, negative_columns, validate_sources
from tests import helpers


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def triplet_rows(count: int, prefix: str = "q") -> list[dict]:
    return [
        {
            "query_id": i,
            "query": f"{prefix} query {i}",
            "pos": f"{prefix} positive {i}",
            "neg": f"{prefix} negative {i}",
        }
        for i in range(count)
    ]


def pair_csv(path: Path, count: int) -> Path:
    anchors = [f"csv anchor {i}" for i in range(count)]
    pd.DataFrame({"anchor": anchors, "positive": [f"csv positive {i}" for i in range(count)]}).to_csv(path, index=False)
    return path


def rows_of(dataset) -> list[dict]:
    return [dict(row) for row in dataset]


# ------------------------------------------------------------------------------------------ formats


def test_jsonl_triplets_drop_ids_and_keep_column_order(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", triplet_rows(3))
    train, held_out = load_training_data([DataSource(path=str(path))], shuffle=False)
    assert held_out is None
    assert train.column_names == ["anchor", "positive", "negative"]
    assert rows_of(train)[1] == {"anchor": "q query 1", "positive": "q positive 1", "negative": "q negative 1"}
    assert all(feature.dtype == "string" for feature in train.features.values())


def test_csv_pairs(tmp_path: Path) -> None:
    train, _ = load_training_data([{"path": str(pair_csv(tmp_path / "pairs.csv", 4))}], shuffle=False)
    assert train.column_names == ["anchor", "positive"]
    assert train["anchor"][:] == [f"csv anchor {i}" for i in range(4)]


def test_headerless_tsv_triplets_keep_quotes(tmp_path: Path) -> None:
    lines = [
        'what is "dark matter"?\tDark matter is "invisible" mass.\tThe "Dark Side" is a 1973 album',
        "can't stop\tit's a song by \"RHCP\"\ta stop sign's color is red",
        '"quoted" at the start\t"unbalanced quote\tlast one',
    ]
    path = tmp_path / "triples.train.small.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    train, _ = load_training_data([str(path)], shuffle=False)
    assert train.column_names == ["anchor", "positive", "negative"]
    assert len(train) == 3  # the first line is data, not a header
    assert rows_of(train)[0] == {
        "anchor": 'what is "dark matter"?',
        "positive": 'Dark matter is "invisible" mass.',
        "negative": 'The "Dark Side" is a 1973 album',
    }
    assert train["positive"][1] == 'it\'s a song by "RHCP"'
    assert rows_of(train)[2] == {
        "anchor": '"quoted" at the start',
        "positive": '"unbalanced quote',
        "negative": "last one",
    }


def test_tsv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "with_header.tsv"
    path.write_text('query_id\tquery\tpositive\n1\tfirst "q"\tfirst p\n2\tsecond q\tsecond p\n', encoding="utf-8")
    train, _ = load_training_data([str(path)], shuffle=False)
    assert train.column_names == ["anchor", "positive"]
    assert rows_of(train) == [
        {"anchor": 'first "q"', "positive": "first p"},
        {"anchor": "second q", "positive": "second p"},
    ]


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pd.DataFrame({"Question": ["pq 0", "pq 1"], "Passage": ["pp 0", "pp 1"], "label": [1, 0]}).to_parquet(path)
    train, _ = load_training_data([str(path)], shuffle=False)
    assert train.column_names == ["anchor", "positive"]  # case-insensitive names; the label column is dropped
    assert train["positive"][:] == ["pp 0", "pp 1"]


def test_negatives_list_column_expands_to_shortest_list(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        {"query": "a", "pos": ["pa", "pa2"], "negatives": ["n1", "n2", "n3"]},
        {"query": "b", "pos": ["pb"], "negatives": ["m1", "m2"]},
    ]
    path = write_jsonl(tmp_path / "bge.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="ragcun.training.data"):
        train, _ = load_training_data([str(path)], shuffle=False)
    assert train.column_names == ["anchor", "positive", "negative", "negative_2"]
    assert rows_of(train) == [
        {"anchor": "a", "positive": "pa", "negative": "n1", "negative_2": "n2"},
        {"anchor": "b", "positive": "pb", "negative": "m1", "negative_2": "m2"},
    ]
    assert "keeping the first 2" in caplog.text


def test_several_negative_columns_keep_file_order(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "n.jsonl", [{"neg_2": "second", "query": "q", "neg_1": "first", "positive": "p"}])
    train, _ = load_training_data([str(path)])
    assert rows_of(train) == [{"anchor": "q", "positive": "p", "negative": "second", "negative_2": "first"}]


def test_explicit_columns_mapping(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"id": 1, "question": "q1", "answer": "a1", "context": "ignored"},
            {"id": 2, "question": "q2", "answer": "a2", "context": "x"},
        ],
    )
    source = DataSource(path=str(path), columns={"question": "anchor", "answer": "positive"})
    train, _ = load_training_data([source], shuffle=False)
    assert rows_of(train) == [{"anchor": "q1", "positive": "a1"}, {"anchor": "q2", "positive": "a2"}]
    # a mapping also picks columns whose names are not recognised, and several negatives in file order
    other = write_jsonl(tmp_path / "other.jsonl", [{"s1": "x", "bad2": "n2", "s2": "y", "bad1": "n1"}])
    mapping = {"s1": "anchor", "s2": "positive", "bad1": "negative", "bad2": "negative"}
    mapped = DataSource(path=str(other), columns=mapping)
    train, _ = load_training_data([mapped])
    assert rows_of(train) == [{"anchor": "x", "positive": "y", "negative": "n2", "negative_2": "n1"}]


def write_beir(folder: Path) -> Path:
    corpus = {"d1": {"title": "Title One", "text": "text one"}, "d2": {"title": "", "text": "text two"},
              "d3": {"title": "T3", "text": "text three"}}
    qrels = [("q1", "d1", 1), ("q1", "d3", 0), ("q2", "d2", 1), ("q2", "d3", 2)]
    return helpers.write_beir(folder, corpus, {"q1": "query one", "q2": "query two"}, qrels, split="train")


def test_beir_folder_gives_pairs_for_positive_qrels(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "scifact")
    train, _ = load_training_data([DataSource(path=str(folder), split="train")], shuffle=False)
    assert train.column_names == ["anchor", "positive"]
    assert sorted((row["anchor"], row["positive"]) for row in train) == [
        ("query one", "Title One text one"),
        ("query two", "T3 text three"),
        ("query two", "text two"),
    ]


def test_glob_of_two_files_is_concatenated(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "part1.jsonl", triplet_rows(2, "a"))
    write_jsonl(tmp_path / "part2.jsonl", triplet_rows(3, "b"))
    train, _ = load_training_data([str(tmp_path / "part*.jsonl")], shuffle=False)
    assert train["anchor"][:] == ["a query 0", "a query 1", "b query 0", "b query 1", "b query 2"]
    # the per-source max_samples runs across the files, in sorted order
    train, _ = load_training_data([{"path": str(tmp_path / "part*.jsonl"), "max_samples": 3}], shuffle=False)
    assert train["anchor"][:] == ["a query 0", "a query 1", "b query 0"]


def test_folder_of_files_prefers_the_split(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", triplet_rows(2, "tr"))
    write_jsonl(tmp_path / "test.jsonl", triplet_rows(2, "te"))
    train, _ = load_training_data([str(tmp_path)], shuffle=False)
    assert train["anchor"][:] == ["tr query 0", "tr query 1"]


def test_rewritten_file_is_read_again(tmp_path: Path) -> None:
    # same path, size and modification time: a cache keyed on those would give back the old rows
    path = write_jsonl(tmp_path / "train.jsonl", triplet_rows(2, "a"))
    stat = path.stat()
    assert load_training_data([str(path)], shuffle=False)[0]["anchor"][:] == ["a query 0", "a query 1"]
    write_jsonl(path, triplet_rows(2, "b"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load_training_data([str(path)], shuffle=False)[0]["anchor"][:] == ["b query 0", "b query 1"]


def test_mixing_triplets_and_pairs_keeps_pairs_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    triplets = write_jsonl(tmp_path / "triplets.jsonl", triplet_rows(3))
    pairs = pair_csv(tmp_path / "pairs.csv", 2)
    with caplog.at_level(logging.WARNING, logger="ragcun.training.data"):
        train, _ = load_training_data([{"path": str(triplets), "name": "trip"}, {"path": str(pairs), "name": "pairs"}])
    assert train.column_names == ["anchor", "positive"]
    assert len(train) == 5
    assert "1 negative column(s) were dropped" in caplog.text and "trip" in caplog.text


def test_max_samples_per_source_and_global(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "first.jsonl", triplet_rows(10, "f"))
    second = write_jsonl(tmp_path / "second.jsonl", triplet_rows(10, "s"))
    train, _ = load_training_data([{"path": str(first), "max_samples": 4}, str(second)], shuffle=False)
    assert len(train) == 14
    assert [a for a in train["anchor"] if a.startswith("f")] == [f"f query {i}" for i in range(4)]
    train, _ = load_training_data([{"path": str(first), "max_samples": 4}, str(second)], max_samples=6)
    assert len(train) == 6


@pytest.mark.parametrize("suffix", [".jsonl", ".tsv"])
def test_a_capped_source_stops_reading_at_its_cap(tmp_path: Path, suffix: str) -> None:
    """A large file capped by max_samples is not parsed past the cap: a broken line after it goes unread."""
    path = tmp_path / f"big{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(row) for row in triplet_rows(5)) + "\n{not json\n", encoding="utf-8")
    else:
        path.write_text("".join(f"q{i}\tp{i}\tn{i}\n" for i in range(5)) + "only\ttwo fields\textra\tfour\n",
                        encoding="utf-8")
    train, _ = load_training_data([{"path": str(path), "max_samples": 5}], shuffle=False)
    assert len(train) == 5
    with pytest.raises(ValueError, match="could not parse"):
        load_training_data([{"path": str(path), "max_samples": 6}], shuffle=False)


def test_eval_split_has_no_anchor_overlap_and_requested_size(tmp_path: Path) -> None:
    # like the DL21 triplets: every query repeated with different negatives
    rows = [{"query": f"q{q}", "pos": f"p{q}", "neg": f"n{q}-{k}"} for q in range(20) for k in range(7)]
    path = write_jsonl(tmp_path / "repeated.jsonl", rows)
    train, held_out = load_training_data([str(path)], eval_size=10, seed=3)
    assert held_out is not None and len(held_out) == 10
    assert not set(train["anchor"]) & set(held_out["anchor"])
    assert len(train) + len(held_out) <= len(rows)
    assert len(train) >= len(rows) - 10 - 6  # at most one anchor's extra rows are set aside
    train, held_out = load_training_data([str(path)], eval_fraction=0.25, seed=3)
    assert held_out is not None and len(held_out) == round(0.25 * len(rows))
    assert not set(train["anchor"]) & set(held_out["anchor"])


def test_seed_reproducibility(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", triplet_rows(50))
    first, first_eval = load_training_data([str(path)], seed=7, eval_size=5)
    again, again_eval = load_training_data([str(path)], seed=7, eval_size=5)
    other, _ = load_training_data([str(path)], seed=8, eval_size=5)
    assert first["anchor"][:] == again["anchor"][:] and first_eval["anchor"][:] == again_eval["anchor"][:]
    assert first["anchor"][:] != other["anchor"][:]
    unshuffled, _ = load_training_data([str(path)], shuffle=False)
    assert first["anchor"][:] != [a for a in unshuffled["anchor"] if a in set(first["anchor"])]


def test_negative_columns_names() -> None:
    assert negative_columns(3) == ["negative", "negative_2", "negative_3"]


# ------------------------------------------------------------------------------------------ bad input


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no file or folder .*missing.jsonl"):
        validate_sources([str(tmp_path / "missing.jsonl")])


def test_glob_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="matches no file"):
        load_training_data([str(tmp_path / "nothing-*.jsonl")])


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"cannot tell the format .*\.jsonl, \.json, \.csv, \.tsv, \.parquet"):
        validate_sources([str(path)])
    with pytest.raises(ValueError, match="unknown format 'xlsx'"):
        validate_sources([{"path": str(path), "format": "xlsx"}])


def test_format_override_reads_other_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("a query\ta passage\n", encoding="utf-8")
    train, _ = load_training_data([{"path": str(path), "format": "tsv"}])
    assert rows_of(train) == [{"anchor": "a query", "positive": "a passage"}]


def test_missing_anchor_or_positive_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{"sentence1": "a", "sentence2": "b"}])
    expected = r"no anchor and no positive column.*sentence1.*Recognised.*columns=\{'sentence1': 'anchor'"
    with pytest.raises(ValueError, match=expected):
        load_training_data([str(path)])
    only_query = write_jsonl(tmp_path / "q.jsonl", [{"query": "a", "text": "b"}])
    with pytest.raises(ValueError, match="found no positive column"):
        load_training_data([str(only_query)])


def test_ambiguous_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "amb.jsonl", [{"query": "a", "question": "b", "pos": "c"}])
    with pytest.raises(ValueError, match=r"several columns could be the anchor: \['query', 'question'\]"):
        load_training_data([str(path)])


def test_mapping_names_absent_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ValueError, match=r"'questoin', which is not in the data.*did you mean 'question'"):
        load_training_data([DataSource(path=str(path), columns={"questoin": "anchor", "answer": "positive"})])


def test_mapping_with_unknown_role(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ValueError, match=r"unknown role 'query' \(did you mean 'anchor'\?\)"):
        validate_sources([DataSource(path=str(path), columns={"question": "query", "answer": "positive"})])
    with pytest.raises(ValueError, match=r"unknown role 'postive' \(did you mean 'positive'\?\)"):
        validate_sources([DataSource(path=str(path), columns={"question": "anchor", "answer": "postive"})])
    with pytest.raises(ValueError, match="exactly one column to 'positive'"):
        validate_sources([DataSource(path=str(path), columns={"question": "anchor"})])


def test_unknown_key_in_dict(tmp_path: Path) -> None:
    path = pair_csv(tmp_path / "p.csv", 2)
    with pytest.raises(ValueError, match=r"unknown key 'max_sample' \(did you mean 'max_samples'\?\)"):
        validate_sources([{"path": str(path), "max_sample": 3}])


def test_empty_data(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no data rows"):
        load_training_data([str(empty)])
    header_only = tmp_path / "header.csv"
    header_only.write_text("anchor,positive\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no data rows"):
        load_training_data([str(header_only)])


def test_empty_anchor_or_positive_is_an_error(tmp_path: Path) -> None:
    rows = [{"query": "a", "pos": "p"}, {"query": "  ", "pos": "p"}, {"query": None, "pos": "p"}]
    path = write_jsonl(tmp_path / "holes.jsonl", rows)
    with pytest.raises(ValueError, match=r"holes: 2 of 3 rows have an empty or missing anchor .*'query'.*row 2.*Clean"):
        load_training_data([{"path": str(path), "name": "holes"}])
    csv_path = tmp_path / "holes.csv"
    csv_path.write_text("anchor,positive\nx,y\nz,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="1 of 2 rows have an empty or missing positive"):
        load_training_data([str(csv_path)])


def test_bad_numbers(tmp_path: Path) -> None:
    path = pair_csv(tmp_path / "p.csv", 4)
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        load_training_data([str(path)], eval_fraction=-0.1)
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        load_training_data([str(path)], eval_fraction=1.0)
    with pytest.raises(ValueError, match="max_samples must be a positive integer"):
        load_training_data([str(path)], max_samples=0)
    with pytest.raises(ValueError, match="max_samples must be a positive integer"):
        validate_sources([{"path": str(path), "max_samples": -1}])
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        load_training_data([str(path)], eval_size=4)
    with pytest.raises(ValueError, match="No training data sources"):
        load_training_data([])


def test_beir_folder_without_split(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "beir")
    with pytest.raises(FileNotFoundError, match=r"no .*qrels/test.tsv.*\['train'\]"):
        validate_sources([{"path": str(folder), "split": "test"}])


def test_hub_id_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert validate_sources(["no-such-org/no-such-dataset"])[0].path == "no-such-org/no-such-dataset"
    start = time.monotonic()
    expected = r"could not be loaded as a Hub dataset id.*only reads the local Hugging Face cache.*local file"
    with pytest.raises(ValueError, match=expected):
        load_training_data(["no-such-org/no-such-dataset"])
    assert time.monotonic() - start < 10
