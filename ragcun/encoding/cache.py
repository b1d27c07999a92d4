"""Encode text lists once per (model, texts, prompt, seq length) and keep the result on disk.

Evaluation and benchmarks re-read the same corpora many times; encoding dominates their cost on a
CPU (SciFact's corpus takes about half an hour with EmbeddingGemma here), so they all go through
this cache. Files are plain ``.npy`` arrays, read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer

from ragcun.io import atomic_write

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ragcun" / "embeddings"


def cache_key(model_id: str, texts: list[str], prompt_name: str | None, max_seq_length: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([model_id, prompt_name, max_seq_length]).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


SHARD_SIZE = 512  # texts per partial file: an interrupted encode resumes from the last finished shard


def encode_shards(
    model: SentenceTransformer,
    model_id: str,
    texts: list[str],
    prompt_name: str | None,
    cache_dir: Path,
    batch_size: int = 16,
    shard_size: int = SHARD_SIZE,
    process_index: int = 0,
    num_processes: int = 1,
) -> None:
    """Encode the missing shards of ``texts`` that belong to this process (every ``num_processes``-th, starting at
    ``process_index``), each saved as it finishes: N processes encode a list N times faster, and
    :func:`encode_cached` then joins the shards."""
    key = cache_key(model_id, texts, prompt_name, model.max_seq_length)
    cache_dir = Path(cache_dir)
    if (cache_dir / f"{key}.npy").exists():
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(texts), shard_size)
    for number, start in enumerate(starts):
        part = cache_dir / f"{key}.part-{number}.npy"
        if number % num_processes != process_index or part.exists():
            continue
        if len(starts) > 1:
            by = f", process {process_index + 1} of {num_processes}" if num_processes > 1 else ""
            print(f"encoding shard {number + 1}/{len(starts)} ({len(texts)} texts{by}) -> {part.name}", flush=True)
        embeddings = model.encode(
            texts[start : start + shard_size],
            prompt_name=prompt_name,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=True,
        ).astype(np.float32)
        _save_atomically(part, embeddings)


def encode_cached(
    model: SentenceTransformer,
    model_id: str,
    texts: list[str],
    prompt_name: str | None,
    cache_dir: Path,
    batch_size: int = 16,
    shard_size: int = SHARD_SIZE,
) -> np.ndarray:
    """Return un-normalized embeddings of ``texts``, from ``cache_dir`` when already computed.

    Long lists are encoded in shards of ``shard_size`` texts, each saved as it finishes
    (``<key>.part-<i>.npy``): a run killed an hour into a corpus loses at most one shard. When all shards
    exist they are joined into ``<key>.npy`` and removed.
    """
    key = cache_key(model_id, texts, prompt_name, model.max_seq_length)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    encode_shards(model, model_id, texts, prompt_name, cache_dir, batch_size, shard_size)
    count = len(range(0, len(texts), shard_size))
    shards = [np.load(cache_dir / f"{key}.part-{number}.npy", allow_pickle=False) for number in range(count)]
    embeddings = np.concatenate(shards) if shards else np.zeros((0, model.get_embedding_dimension()), np.float32)
    _save_atomically(path, embeddings)
    for number in range(count):
        (cache_dir / f"{key}.part-{number}.npy").unlink(missing_ok=True)
    return embeddings


def _save_atomically(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: np.save(tmp, array, allow_pickle=False))
