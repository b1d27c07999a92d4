"""Which model a retriever encodes with, and whether it is the one its documents were embedded with.

A saved retriever records its model's source and fingerprint (:func:`ragcun.identity.model_fingerprint`); at load,
a model that computes something else would put queries in another space than the stored documents, so it is
refused unless the caller vouches for it.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragcun.identity import model_dimension, model_fingerprint
from ragcun.retrieval.checks import _check_vectors

FINGERPRINT_METHOD = "sha256 over module types, prompts, embedding dimension and every state_dict tensor (v1)"


def one_model_argument(model: Any, model_path: Any) -> tuple[Any, str | None]:
    """(loaded model or None, folder / Hub id or None) from either parameter: ``model`` and ``model_path`` each take
    a folder, a Hub id or a loaded model, so ``load(directory, "out/final")`` means the folder, as it reads."""
    model_is_path, path_is_model = isinstance(model, (str, os.PathLike)), not isinstance(model_path, (str, os.PathLike))
    if model_is_path and model_path is not None:
        raise ValueError(f"Two models were given, {model!r} and {model_path!r}: pass the model once.")
    if model_is_path:
        return None, str(model)
    if model_path is not None and path_is_model:
        if model is not None:
            raise ValueError("Two models were given: pass the model once.")
        return model_path, None
    return model, None if model_path is None else str(model_path)


def open_model(model: Any, model_path: str | None, device: str | None, dimension: int | None,
               calibration: str) -> tuple[Any, int | None]:
    """The model a new retriever encodes with (``model``, else loaded from ``model_path``, else None) and the
    embedding dimension (the model's, else ``dimension``); warns where the global p-values would mislead."""
    if model is None and model_path is not None:
        from ragcun.model import load_base  # plain SentenceTransformer(path), no remote code

        model = load_base(str(model_path), device=device)
    model_dim = model_dimension(model) if model is not None else None
    if dimension is not None and model_dim is not None and dimension != model_dim:
        raise ValueError(f"dimension={dimension} but the model outputs {model_dim}-dimensional embeddings.")
    similarity = getattr(model, "similarity_fn_name", None)
    if similarity not in (None, "euclidean") and calibration == "global":
        warnings.warn(
            f"The model's similarity function is {similarity!r}, not 'euclidean': L2 ranking still works, but the "
            "global p-values assume un-normalized N(0, I) embeddings (a ragcun model) and mean little here; "
            "calibration='corpus' fits the null to the corpus instead.",
            stacklevel=3,
        )
    return model, model_dim or dimension


def encode(model: Any, texts: list[str], kind: Literal["query", "document"], batch_size: int, show_progress_bar: bool,
           dim: int | None) -> np.ndarray:
    """Embeddings of ``texts`` with the model's ``query`` or ``document`` prompt (plain ``encode`` for a model
    without them), un-normalized, checked to be finite, one per text and ``dim`` wide."""
    kwargs = {"batch_size": batch_size, "show_progress_bar": show_progress_bar, "convert_to_numpy": True, "normalize_embeddings": False}
    method = getattr(model, f"encode_{kind}", None)
    embeddings = method(texts, **kwargs) if callable(method) else model.encode(texts, **kwargs)
    embeddings = _check_vectors(embeddings, dim, f"The model's {kind} embeddings")
    if len(embeddings) != len(texts):
        raise ValueError(f"The model returned {len(embeddings)} embeddings for {len(texts)} texts.")
    return embeddings



def _hub_revision(name: str | None) -> str | None:
    """The commit of a Hub model in the local cache (None for local folders or when unknown)."""
    if not name or Path(name).expanduser().exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(name, "modules.json")
    except Exception:  # noqa: BLE001 - a revision is a nice-to-have, never a reason to fail
        return None
    match = re.search(r"snapshots[/\\]([0-9a-f]{40})", path) if isinstance(path, str) else None
    return match.group(1) if match else None


def _model_source(model_path: str | None) -> str | None:
    if model_path is None:
        return None
    local = Path(model_path).expanduser()
    return str(local.resolve()) if local.exists() else str(model_path)


def model_manifest(model: Any, model_path: str | None) -> dict[str, Any] | None:
    """The manifest's ``"model"`` object: where the model can be found again and a fingerprint that tells whether
    a model given at load is the same one (None for a retriever built from precomputed embeddings)."""
    if model is None:
        return None
    return {
        "name_or_path": _model_source(model_path),
        "revision": _hub_revision(model_path),
        "fingerprint": model_fingerprint(model),
        "fingerprint_method": FINGERPRINT_METHOD,
        "dimension": model_dimension(model),
        "similarity_fn_name": getattr(model, "similarity_fn_name", None),
        "prompts": dict(getattr(model, "prompts", {}) or {}),
    }


def check_model(model: Any, saved: dict | None, dim: int | None, allow_mismatch: bool, directory: Path) -> bool:
    """Refuse a model that does not fit the saved index; True if it is the recorded model (or none was recorded)."""
    model_dim = model_dimension(model)
    if dim is not None and model_dim is not None and model_dim != dim:
        raise ValueError(
            f"The model outputs {model_dim}-dimensional embeddings, but the retriever at {directory} holds {dim}-dimensional "
            "ones: queries and documents would live in different spaces. Load it with the model it was built with "
            f"({(saved or {}).get('name_or_path')!r}), or rebuild the retriever with this model."
        )
    if saved is None or saved.get("fingerprint") is None:
        return True  # built from precomputed embeddings: nothing recorded to compare against
    fingerprint = model_fingerprint(model)
    if fingerprint == saved["fingerprint"]:
        return True
    if not allow_mismatch:
        raise ValueError(
            f"The retriever at {directory} was built with a different model ({saved.get('name_or_path')!r}, fingerprint "
            f"{saved['fingerprint'][:19]}...) than the one given (fingerprint {str(fingerprint)[:19]}...): its document "
            "embeddings would not match the queries. Load it with the original model, rebuild the retriever with this "
            "one, or pass allow_model_mismatch=True if you know this model produces the same embeddings."
        )
    return False


def load_model(
    model: Any, model_path: str | None, saved: dict | None, dim: int | None, allow_mismatch: bool, directory: Path,
    device: str | None,
) -> tuple[Any, bool]:
    """The model for a loaded retriever (``model``, else ``model_path``, else the recorded one) and whether it is
    the recorded model; refused (ValueError) if it does not fit the saved index."""
    source = model_path or (saved or {}).get("name_or_path") if model is None else None
    if model is None and source is not None:
        from ragcun.model import load_base  # plain SentenceTransformer(path), no remote code

        try:
            model = load_base(str(source), device=device)
        except ValueError as error:
            raise ValueError(
                f"Could not load the retriever's model {source!r}: {error} Pass model= or model_path= to load()."
            ) from error
    same_model = check_model(model, saved, dim, allow_mismatch, directory) if model is not None else True
    return model, same_model
