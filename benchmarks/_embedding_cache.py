"""Encode text lists once per (model, texts, prompt, seq length) and keep the result on disk.

Benchmarks and experiments re-read the same corpora many times; encoding dominates their cost
on a CPU, so every script goes through this cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer


def cache_key(model_id: str, texts: list[str], prompt_name: str | None, max_seq_length: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([model_id, prompt_name, max_seq_length]).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def encode_cached(
    model: SentenceTransformer,
    model_id: str,
    texts: list[str],
    prompt_name: str | None,
    cache_dir: Path,
    batch_size: int = 16,
) -> np.ndarray:
    """Return un-normalized embeddings of ``texts``, from ``cache_dir`` when already computed."""
    key = cache_key(model_id, texts, prompt_name, model.max_seq_length)
    path = Path(cache_dir) / f"{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    embeddings = model.encode(
        texts,
        prompt_name=prompt_name,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=False,
        show_progress_bar=True,
    ).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, embeddings, allow_pickle=False)
    os.replace(tmp, path)
    return embeddings
