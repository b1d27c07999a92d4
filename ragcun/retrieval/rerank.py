"""Exact distances for the candidates a store proposes: every index type and backend reports ‖q − d‖ recomputed
in float64 from the stored float32 vectors, so the same pair gets the same number whatever found it (FAISS'
squared, expanded distances are only used to find the candidates)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ragcun.distance import paired_squared_l2
from ragcun.retrieval.config import IndexConfig

# Queries are searched in blocks of this many, so a huge batch never builds a huge distance matrix.
_QUERY_BLOCK = 256
# Elements of float64 scratch per block when recomputing exact distances of candidates (~32 MB).
_REFINE_ELEMENTS = 4_000_000


def _k_best(candidates: np.ndarray, squared: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest distances per row with their ids, ordered by (distance, id); -1/inf where none."""
    valid = candidates >= 0
    order = np.lexsort((np.where(valid, candidates, np.iinfo(np.int64).max), squared), axis=-1)[:, :k]
    return np.take_along_axis(np.where(valid, candidates, -1), order, axis=1), np.take_along_axis(
        squared, order, axis=1
    )


def nearest(store: Any, config: IndexConfig, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Internal ids and exact L2 distances of the k best candidates per query, nearest first (-1/inf pad)."""
    all_ids, all_distances = [], []
    for start in range(0, len(queries), _QUERY_BLOCK):
        block = queries[start : start + _QUERY_BLOCK]
        candidates = store.candidates(block, k, config)
        ids, distances = _refine(store, block, candidates, k)
        all_ids.append(ids)
        all_distances.append(distances)
    return np.concatenate(all_ids), np.concatenate(all_distances)


def _refine(store: Any, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest candidates per query by exact ‖q − x‖, computed in float64 from the stored vectors.

    Many candidates (binary rerank) are first cut to k with float32 distances (half the memory traffic);
    the k kept are then measured again in float64 and sorted, ties by internal id, so every index type
    and backend reports the same distances in the same order.
    """
    if candidates.shape[1] > k:
        candidates, _ = _k_best(candidates, _squared_distances(store, queries, candidates, np.float32), k)
    ids, squared = _k_best(candidates, _squared_distances(store, queries, candidates, np.float64), k)
    return ids, np.sqrt(squared)


def _squared_distances(store: Any, queries: np.ndarray, candidates: np.ndarray, dtype: Any) -> np.ndarray:
    valid = candidates >= 0
    squared = np.full(candidates.shape, np.inf)
    per_block = max(1, _REFINE_ELEMENTS // max(1, candidates.shape[1] * queries.shape[1]))
    for start in range(0, len(queries), per_block):
        stop = start + per_block
        mask = valid[start:stop]
        vectors = store.vectors(candidates[start:stop][mask]).astype(dtype, copy=False)
        rows = queries[start:stop][np.nonzero(mask)[0]].astype(dtype, copy=False)
        squared[start:stop][mask] = paired_squared_l2(vectors, rows)
    return squared
