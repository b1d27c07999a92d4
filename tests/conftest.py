"""Shared fixtures. Tests never touch the network: the Hub is switched off before anything imports it."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

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


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny EmbeddingGemma-shaped base model on disk (built once per test session)."""
    from ragcun.tiny_model import build_tiny_gemma

    queries, passages = tiny_texts()
    return build_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"), queries + passages, hidden_size=32, num_layers=2)
