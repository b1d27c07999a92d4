"""What a model or a model folder *is*, as a short hash: the one home of ragcun's fingerprints.

- :func:`model_fingerprint`: what a loaded model computes (module types, prompts, dimension, every weight); stored in
  a saved retriever's manifest so a different model is refused at load.
- :func:`weights_revision`: ``local-<12 hex>``, the default MTEB results revision of a model (weights, prompts,
  similarity, max length), so a retrained model never reuses another's cached scores.
- :func:`folder_fingerprint`: a folder's file names, sizes and mtimes, without reading the weights; keys the
  embedding cache, where hashing a 1.2 GB model on every lookup would cost more than it saves.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch


def _digest_weights(digest: Any, state_dict: dict[str, torch.Tensor], after_shape: str) -> None:
    """Feed every tensor's name, dtype, shape and bytes (on CPU) into ``digest``."""
    for name, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}{after_shape}".encode())
        if tensor.numel():
            digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))


def model_dimension(model: Any) -> int | None:
    """The embedding dimension a model reports (either sentence-transformers spelling), or None."""
    for getter in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        method = getattr(model, getter, None)
        if callable(method):
            value = method()
            if value is not None:
                return int(value)
    return None


def model_fingerprint(model: Any) -> str | None:
    """A hash that identifies a model by what it computes, wherever it was loaded from.

    sha256 over the module class names, the prompts, the embedding dimension and every tensor of the
    ``state_dict`` (name, dtype, shape, bytes). The same weights give the same fingerprint whether the model
    was built in memory, loaded from a folder or from the Hub cache, on any device; any fine-tuning step
    changes it. Hashing reads every weight once (about a second per GB). Returns None for objects that are
    not torch modules (then only the dimension can be checked).
    """
    state_dict = getattr(model, "state_dict", None)
    if state_dict is None:
        return None
    digest = hashlib.sha256()
    header = {
        "modules": [type(module).__name__ for module in model] if hasattr(model, "__iter__") else [type(model).__name__],
        "prompts": dict(getattr(model, "prompts", {}) or {}),
        "dimension": model_dimension(model),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    _digest_weights(digest, state_dict(), after_shape="|")
    return "sha256:" + digest.hexdigest()


def weights_revision(model: Any) -> str:
    """``local-<12 hex>``: a hash of the weights, prompts, similarity and max length (the default MTEB revision)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((model.similarity_fn_name, sorted(model.prompts.items()), model.max_seq_length)).encode())
    _digest_weights(digest, model.state_dict(), after_shape="")
    return f"local-{digest.hexdigest()[:12]}"


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
