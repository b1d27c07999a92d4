"""Shared fixtures. Tests never touch the network: the Hub is switched off before anything imports it."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from ragcun import build_model  # noqa: E402
from tests.helpers import tiny_texts  # noqa: E402


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny EmbeddingGemma-shaped base model on disk (built once per test session)."""
    from ragcun.tiny_model import build_tiny_gemma

    queries, passages = tiny_texts()
    return build_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"), queries + passages, hidden_size=32, num_layers=2)


@pytest.fixture(scope="session")
def two_models(tiny_base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A whitened 16-d head on the tiny base (saved) and the base itself: (tuned path, base path)."""
    queries, passages = tiny_texts()
    tuned = build_model(str(tiny_base_dir), output_dim=16, init="whiten",
                        init_texts={"query": queries, "document": passages}, freeze_layers=0)
    path = tmp_path_factory.mktemp("tuned") / "final"
    tuned.save(str(path))
    return str(path), str(tiny_base_dir)
