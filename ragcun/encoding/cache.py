"""Encode text lists once per (model, texts, prompt, seq length) and keep the result on disk.

Evaluation and benchmarks re-read the same corpora many times; encoding dominates their cost on a
CPU (SciFact's corpus takes about half an hour with EmbeddingGemma here), so they all go through
this cache. Files are plain ``.npy`` arrays, read with ``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer

from ragcun.identity import cache_key
from ragcun.io import atomic_write

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ragcun" / "embeddings"


SHARD_SIZE = 512  # texts per partial file: an interrupted encode resumes from the last finished shard


def encode_cached(
    model: SentenceTransformer,
    model_id: str,
    texts: list[str],
    prompt_name: str | None,
    cache_dir: Path,
    batch_size: int = 16,
    shard_size: int = SHARD_SIZE,
    process_share: tuple[int, int] = (0, 1),
) -> np.ndarray | None:
    """Return un-normalized embeddings of ``texts``, from ``cache_dir`` when already computed.

    ``model_id`` is what the cache knows the model by (:func:`ragcun.identity.embedding_identity`); the file name
    is its :func:`~ragcun.identity.cache_key` with the texts, the prompt and the model's max_seq_length.

    Long lists are encoded in shards of ``shard_size`` texts, each saved as it finishes
    (``<key>.part-<i>.npy``): a run killed an hour into a corpus loses at most one shard. When all shards
    exist they are joined into ``<key>.npy`` and removed. ``process_share=(i, n)`` with n > 1 encodes only this
    process's shards (every n-th, from the i-th) and returns None: N processes encode a list N times faster, and
    a later call with the default share joins their shards.
    """
    key = cache_key(model_id, texts, prompt_name, model.max_seq_length)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False) if process_share[1] == 1 else None
    cache_dir.mkdir(parents=True, exist_ok=True)
    parts = [cache_dir / f"{key}.part-{number}.npy" for number in range(len(range(0, len(texts), shard_size)))]
    process_index, num_processes = process_share
    for number, part in enumerate(parts):
        if number % num_processes != process_index or part.exists():
            continue
        if len(parts) > 1:
            by = f", process {process_index + 1} of {num_processes}" if num_processes > 1 else ""
            print(f"encoding shard {number + 1}/{len(parts)} ({len(texts)} texts{by}) -> {part.name}", flush=True)
        start = number * shard_size
        embeddings = model.encode(texts[start : start + shard_size], prompt_name=prompt_name, batch_size=batch_size,
                                  convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=True)
        _save_atomically(part, embeddings.astype(np.float32))
    if num_processes > 1:
        return None
    shards = [np.load(part, allow_pickle=False) for part in parts]
    embeddings = np.concatenate(shards) if shards else np.zeros((0, model.get_embedding_dimension()), np.float32)
    _save_atomically(path, embeddings)
    for part in parts:
        part.unlink(missing_ok=True)
    return embeddings


def _save_atomically(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: np.save(tmp, array, allow_pickle=False))
