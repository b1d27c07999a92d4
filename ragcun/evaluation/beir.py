"""Read evaluation folders in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class BeirSplit:
    """One evaluation split: only the queries that have judgements, and the whole corpus."""

    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_beir(folder: str | Path, split: str = "test") -> BeirSplit:
    """Load a BEIR folder; documents are ``title + " " + text`` when a title exists (BEIR's convention)."""
    folder = Path(folder)
    paths = {
        "corpus": folder / "corpus.jsonl",
        "queries": folder / "queries.jsonl",
        "qrels": folder / "qrels" / f"{split}.tsv",
    }
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a complete BEIR folder: missing {', '.join(missing)}. "
            "Expected corpus.jsonl, queries.jsonl and qrels/<split>.tsv."
        )
    corpus = _read_jsonl(paths["corpus"])
    if not corpus:
        raise ValueError(f"{paths['corpus']} holds no documents.")
    corpus_ids = [str(doc["_id"]) for doc in corpus]
    corpus_texts = [
        (f"{doc['title']} {doc['text']}" if doc.get("title") else doc["text"]).strip() for doc in corpus
    ]
    queries = {str(q["_id"]): q["text"] for q in _read_jsonl(paths["queries"])}

    qrels: dict[str, dict[str, int]] = {}
    with paths["qrels"].open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ValueError(f"{paths['qrels']} must start with the header 'query-id<TAB>corpus-id<TAB>score'.")
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])

    known_docs = set(corpus_ids)
    unknown_queries = sorted(set(qrels) - set(queries))
    unknown_docs = sorted({d for judged in qrels.values() for d in judged} - known_docs)
    if unknown_queries or unknown_docs:
        raise ValueError(
            f"{paths['qrels']} names ids that are not in the folder: "
            f"{len(unknown_queries)} queries (e.g. {unknown_queries[:3]}), "
            f"{len(unknown_docs)} documents (e.g. {unknown_docs[:3]}). Check that the qrels match this corpus."
        )
    query_ids = sorted(qrels)
    return BeirSplit(corpus_ids, corpus_texts, query_ids, [queries[q] for q in query_ids], qrels)
