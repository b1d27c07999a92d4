"""Plain helpers shared by the tests (fixtures live in conftest.py): tiny texts, BEIR folders, train.py runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

TOPICS = {
    "astronomy": ["planets orbit the sun", "a comet has an icy tail", "the moon reflects sunlight"],
    "cooking": ["bread needs yeast to rise", "boil pasta in salted water", "sear the steak in a hot pan"],
    "medicine": ["vaccines train the immune system", "antibiotics kill bacteria", "insulin controls blood sugar"],
    "music": ["a violin has four strings", "jazz uses improvisation", "the piano has eighty eight keys"],
}


def tiny_texts() -> tuple[list[str], list[str]]:
    """Short queries and passages on a few topics: enough for a tokenizer and a whitening fit."""
    queries, passages = [], []
    for topic, facts in TOPICS.items():
        for i, fact in enumerate(facts):
            for variant in range(6):
                queries.append(f"what about {topic} fact {i} variant {variant}")
                passages.append(f"{fact} in {topic} note {variant}")
    return queries, passages


def write_beir(folder: Path, corpus: dict[str, dict], queries: dict[str, str], qrels: list[tuple[str, str, int]],
               split: str = "test", write_corpus: bool = True) -> Path:
    """A BEIR folder: corpus.jsonl ({id: {title, text}}), queries.jsonl, qrels/<split>.tsv (query, doc, grade)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    if write_corpus:
        (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, **doc}) + "\n" for i, doc in corpus.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()))
    lines = "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + lines)
    return folder


def write_topic_beir(folder: Path, *, corpus: bool = True, bad_qrels: bool = False) -> Path:
    """A BEIR test split over TOPICS: one query per fact, its fact relevant, the tiny passages as distractors;
    ``corpus=False`` leaves corpus.jsonl out, ``bad_qrels`` judges a document that does not exist."""
    docs, queries, qrels = {}, {}, []
    for topic, facts in TOPICS.items():
        for i, fact in enumerate(facts):
            docs[f"{topic}-{i}"] = {"title": topic, "text": fact}
            queries[f"q-{topic}-{i}"] = f"what about {topic} fact {i}"
            qrels.append((f"q-{topic}-{i}", f"{topic}-{i}", 1))
    _, passages = tiny_texts()
    docs.update({f"extra-{i}": {"title": "", "text": text} for i, text in enumerate(passages)})  # distractors
    if bad_qrels:
        qrels.append(("q-music-0", "no-such-doc", 1))
    return write_beir(folder, docs, queries, qrels, write_corpus=corpus)


# ---------------------------------------------------------------- train.py runs
REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
TINY = REPO / "recipes" / "tiny.yaml"
TRIPLETS = REPO / "recipes" / "data" / "quickstart-triplets.jsonl"


def small_recipe(tmp_path: Path, drop: tuple[str, ...] = (), **overrides) -> Path:
    """The tiny-model recipe shrunk to seconds: fewer rows, fewer layers, a few steps; ``drop``: keys to remove."""
    recipe = yaml.safe_load(TINY.read_text())
    recipe.update(
        train_data=[str(TRIPLETS)], max_samples=160, eval_size=32, tiny_num_layers=2, tiny_hidden_size=32,
        output_dim=16, init_samples=120, num_slices=64, per_device_train_batch_size=16, max_steps=12,
        logging_steps=1, eval_steps=6, save_steps=4, save_total_limit=None, load_best_model_at_end=False,
        output_dir=str(tmp_path / "run"), disable_tqdm=True, dataloader_drop_last=True,
    )
    recipe.update(overrides)
    for key in drop:
        recipe.pop(key, None)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_train(args: list[str], cwd: Path = REPO, timeout: int = 400, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)


def head_recipe(tmp_path: Path, **overrides) -> Path:
    """``small_recipe`` in head-only mode: cached embeddings, a 32-d scaled head, a dozen steps."""
    settings = dict(train_head_only=True, embedding_cache_dir=str(tmp_path / "cache"), init="scaled", output_dim=32,
                    per_device_train_batch_size=64, learning_rate=1e-3, max_steps=12, eval_steps=6, save_steps=4)
    return small_recipe(tmp_path, drop=("freeze_layers",), **{**settings, **overrides})
