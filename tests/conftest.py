"""Shared fixtures. Tests never touch the network: the Hub is switched off before anything imports it."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

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
