"""What a model or a model folder *is*, as a short hash: the one home of ragcun's fingerprints.

- :func:`model_fingerprint`: what a loaded model computes (module types, prompts, dimension, every weight); stored in
  a saved retriever's manifest so a different model is refused at load.
- :func:`weights_revision`: ``local-<12 hex>``, the default MTEB results revision of a model (weights, prompts,
  similarity, max length, precision), so a retrained model never reuses another's cached scores.
- :func:`folder_fingerprint`: a folder's file names, sizes and mtimes, without reading the weights, or a Hub id's
  commit; keys the embedding cache, where hashing a 1.2 GB model on every lookup would cost more than it saves.
- :func:`embedding_identity` and :func:`cache_key`: every embedding cache file's name goes through these two, so
  the model, its role, the precision, the prompt, the token cap and the texts are always all in it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

from ragcun.encoding.precision import precision_tag


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


def weights_revision(model: Any, precision: str = "float32") -> str:
    """``local-<12 hex>``: a hash of the weights, prompts, similarity and max length (the default MTEB revision),
    then, beyond float32, the precision (``-bfloat16``): results of one precision never stand in for the other's."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((model.similarity_fn_name, sorted(model.prompts.items()), model.max_seq_length)).encode())
    _digest_weights(digest, model.state_dict(), after_shape="")
    return f"local-{digest.hexdigest()[:12]}{precision_tag(precision, '-')}"


def hub_commit(repo_id: str, revision: str | None = None) -> str:
    """The commit a Hub id stands for in the local Hugging Face cache (``revision``: a branch, tag or commit; the
    default branch when None), read offline: a model updated upstream gets a new commit, so new cache keys.

    A pinned commit that the cache does not hold is trusted as it is (it names immutable weights); anything else
    that cannot be resolved offline is refused rather than keyed by a name that can move."""
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True)).name
    except (LocalEntryNotFoundError, HFValidationError, OSError) as error:
        if revision is not None and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
            return revision
        pinned = f"revision {revision!r} of " if revision else ""
        raise ValueError(
            f"Cannot tell which commit of {pinned}{repo_id!r} to key its cached embeddings by: it is neither a local "
            "folder nor in the local Hugging Face cache, and a name alone would serve old embeddings after the model "
            "changes upstream. Download it once (without HF_HUB_OFFLINE), pass a local folder, or pin a 40-hex commit "
            "(recipe: base_revision; ragcun-evaluate: --revision ID=COMMIT)."
        ) from error


def folder_fingerprint(model_name_or_path: str, revision: str | None = None) -> str:
    """A local folder: its name plus the size and mtime of its files (a retrained model gets new keys). A Hub id:
    ``<id>@<commit>``, at ``revision`` when pinned (see :func:`hub_commit`); a local folder ignores ``revision``."""
    from ragcun.model import resolve_base  # a Hub id that a package ships is keyed as the folder it loads from

    path = Path(resolve_base(str(model_name_or_path))).expanduser()
    if not path.is_dir():
        return f"{model_name_or_path}@{hub_commit(str(model_name_or_path), revision)}"
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{path.name}@{digest.hexdigest()[:12]}"


def embedding_identity(model_name_or_path: str, role: str, precision: str = "float32",
                       revision: str | None = None) -> str:
    """What the embedding cache knows a model's embeddings by: the model (:func:`folder_fingerprint`), the role it
    encodes in (a display name, ``frozen-base``, ``memo``: the same model in two roles never shares files) and,
    beyond float32, the precision (bfloat16 embeddings never stand in for float32 ones, or back)."""
    return f"{folder_fingerprint(model_name_or_path, revision)}|{role}{precision_tag(precision, '|')}"


def cache_key(identity: str, texts: Sequence[str], prompt_name: str | None, max_seq_length: int | None) -> str:
    """The name of a cache file: 24 hex of sha256 over the identity (:func:`embedding_identity`), the prompt, the
    token cap and every text, in order."""
    digest = hashlib.sha256()
    digest.update(json.dumps([identity, prompt_name, max_seq_length]).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]
