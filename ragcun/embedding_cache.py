"""Encode text lists once per (model, texts, prompt, seq length) and keep the result on disk.

Evaluation and benchmarks re-read the same corpora many times; encoding dominates their cost on a
CPU (SciFact's corpus takes about half an hour with EmbeddingGemma here), so they all go through
this cache. Files are plain ``.npy`` arrays, read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer


def folder_fingerprint(model_name_or_path: str) -> str:
    """Name plus, for a local folder, the size and mtime of its files: a retrained model gets new keys."""
    path = Path(str(model_name_or_path)).expanduser()
    if not path.is_dir():
        return str(model_name_or_path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{path.name}@{digest.hexdigest()[:12]}"


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
