"""Sources that are not data files: Hub dataset ids, ``save_to_disk`` folders and BEIR folders."""

from __future__ import annotations

from pathlib import Path

import datasets
import pyarrow as pa
from datasets import Dataset, DatasetDict

from ragcun.evaluation.beir import load_beir
from ragcun.training.data.sources import DataSource


def load_hub(source: DataSource) -> Dataset:
    """A Hub dataset's split; offline, only what the local Hugging Face cache holds."""
    try:
        loaded = datasets.load_dataset(source.path, source.config_name, split=source.split)
    except Exception as error:  # datasets raises many types: ConnectionError, DatasetNotFoundError, ValueError, ...
        raise ValueError(
            f"{source.label}: {source.path!r} is not a local file or folder, and could not be loaded as a Hub dataset "
            f"id (config {source.config_name!r}, split {source.split!r}): {type(error).__name__}: {error}. "
            "Offline (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1) only reads the local Hugging Face cache. "
            "Pass a local file (.jsonl, .csv, .tsv, .parquet), a glob or a folder instead, or load the dataset once "
            "while online."
        ) from error
    if not isinstance(loaded, Dataset):
        raise ValueError(f"{source.label}: load_dataset returned a {type(loaded).__name__}, not a Dataset.")
    return loaded


def load_disk(source: DataSource, folder: Path) -> Dataset:
    """A ``save_to_disk`` folder: a Dataset, or the source's split of a DatasetDict."""
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, DatasetDict):
        if source.split not in loaded:
            raise ValueError(f"{source.label}: {folder} has no split {source.split!r}; it has {sorted(loaded)}.")
        loaded = loaded[source.split]
    return loaded


def beir_pairs(source: DataSource, folder: Path) -> pa.Table:
    """(query, relevant document) pairs for every qrel with score > 0; documents are ``title + " " + text``."""
    split = load_beir(folder, source.split)
    documents = dict(zip(split.corpus_ids, split.corpus_texts))
    anchors, positives = [], []
    for query_id, query_text in zip(split.query_ids, split.query_texts):
        for doc_id, score in split.qrels[query_id].items():
            if score > 0:
                anchors.append(query_text)
                positives.append(documents[doc_id])
    if source.max_samples is not None:
        anchors, positives = anchors[: source.max_samples], positives[: source.max_samples]
    if not anchors:
        raise ValueError(
            f"{source.label}: qrels/{source.split}.tsv of {folder} has no judgement with score > 0, "
            "so no training pair."
        )
    return pa.table({"anchor": pa.array(anchors, pa.string()), "positive": pa.array(positives, pa.string())})
