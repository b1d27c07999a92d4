"""Input checks of the public retriever methods: each raises a message that says what to pass instead, before
anything is encoded or stored (so a failed call leaves the retriever unchanged)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np


def _check_int(name: str, value: Any, minimum: int) -> int:
    """An integer setting of at least ``minimum`` (bools refused: ``True`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_optional_int(name: str, value: Any) -> int | None:
    """A positive integer setting, or None for "choose automatically"."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
    return None if value is None else int(value)


def _check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k <= 0:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}. Ask for at least one result, e.g. top_k=5.")
    return int(top_k)


def _check_max_pvalue(max_pvalue: Any) -> float | None:
    if max_pvalue is None:
        return None
    if isinstance(max_pvalue, bool) or not isinstance(max_pvalue, (int, float, np.floating)) or not 0 < max_pvalue <= 1:
        raise ValueError(f"max_pvalue must be a number in (0, 1] (e.g. 0.01) or None, got {max_pvalue!r}.")
    return float(max_pvalue)


def _check_texts(values: Any, noun: str, plural: str, single_string: str, not_text: str, empty: str) -> list[str]:
    """A list of non-empty strings, or a TypeError / ValueError saying which item is wrong and what to do."""
    if isinstance(values, str):
        raise TypeError(single_string)
    if not isinstance(values, Iterable):
        raise TypeError(f"{plural} must be a list of strings, got {type(values).__name__}.")
    values = list(values)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{noun} {i} is a {type(value).__name__}, not a string. {not_text}")
        if not value.strip():
            raise ValueError(f"{noun} {i} {empty}")
    return values


def _check_queries(queries: Any) -> list[str]:
    return _check_texts(
        queries, "Query", "queries",
        single_string="queries must be a list of strings; for a single query use retrieve(query) or search(query).",
        not_text="Pass query texts.", empty="is empty. Pass a non-empty query text.")


def _check_documents(documents: Any) -> list[str]:
    return _check_texts(
        documents, "Document", "documents",
        single_string="documents must be a list of strings, got a single string: wrap it in a list, e.g. [document].",
        not_text="Convert it to text first (nothing was added).",
        empty="is empty or whitespace. Remove it or give it text (nothing was added).")


def _normalize_id(value: Any, position: int) -> str | int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"ids[{position}] is a bool; ids must be strings or integers (nothing was added).")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"ids[{position}] is a {type(value).__name__}; ids must be strings or integers (nothing was added).")


def _check_ids(ids: Any, count: int) -> list[str | int] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a list with one id per document, got a single string: wrap it in a list.")
    ids = [_normalize_id(value, i) for i, value in enumerate(ids)]
    if len(ids) != count:
        raise ValueError(f"Got {len(ids)} ids for {count} documents: pass exactly one id per document (nothing was added).")
    seen: dict[str | int, int] = {}
    for i, value in enumerate(ids):
        if value in seen:
            raise ValueError(
                f"Duplicate id {value!r} at positions {seen[value]} and {i} in one call. Ids must be unique within a call; "
                "to replace a document, add it again in a later call (nothing was added)."
            )
        seen[value] = i
    return ids


def _check_metadata(metadata: Any, count: int) -> list[dict | None]:
    if metadata is None:
        return [None] * count
    if isinstance(metadata, dict):
        raise TypeError("metadata must be a list with one dict (or None) per document, got a single dict: wrap it in a list.")
    metadata = list(metadata)
    if len(metadata) != count:
        raise ValueError(f"Got {len(metadata)} metadata entries for {count} documents: pass one per document (nothing was added).")
    for i, meta in enumerate(metadata):
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"metadata[{i}] is a {type(meta).__name__}; each entry must be a dict or None (nothing was added).")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata[{i}] is not JSON-serializable ({error}); it could not be saved (nothing was added).") from error
    return metadata


def _check_vectors(vectors: Any, dim: int | None, what: str) -> np.ndarray:
    if hasattr(vectors, "detach") and hasattr(vectors, "cpu"):
        vectors = vectors.detach().cpu().float().numpy()
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} must be a numeric array of shape (n, D): {error}") from error
    if array.ndim != 2:
        raise ValueError(f"{what} must have shape (n, D), got shape {array.shape}.")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{what} have {array.shape[1]} dimensions, but this retriever holds {dim}-dimensional embeddings.")
    if array.shape[1] == 0:
        raise ValueError(f"{what} have 0 dimensions.")
    if not np.isfinite(array).all():
        rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(f"{what} contain NaN or inf (rows {rows[:5].tolist()}); check the model or the input (nothing was added).")
    return np.ascontiguousarray(array)

