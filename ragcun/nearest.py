"""Exact k-best selection over costs computed block by block: the one home of exact top-k search.

Evaluation ranks a corpus for every query (:func:`ragcun.evaluation.metrics.rank`) and the numpy index of
:class:`~ragcun.GaussianRetriever` serves exact L2 search; both score a block at a time, so that a large corpus
never needs a full (queries × documents) matrix, and keep each query's k lowest costs across blocks.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def k_smallest(blocks: Iterable[tuple[int, np.ndarray]], k: int, ordered: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` lowest costs over ``blocks`` of ``(first column, costs (Q, B))``: (columns, costs), both
    (Q, min(k, total columns)), lowest first when ``ordered`` (ties keep column order), any order otherwise."""
    column_parts, cost_parts = [], []
    for start, costs in blocks:
        kk = min(k, costs.shape[1])
        if kk < costs.shape[1]:
            part = np.argpartition(costs, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(costs.shape[1]), costs.shape)
        column_parts.append(part + start)
        cost_parts.append(np.take_along_axis(costs, part, axis=1))
    columns, costs = np.concatenate(column_parts, axis=1), np.concatenate(cost_parts, axis=1)
    if columns.shape[1] > k:
        best = np.argpartition(costs, k - 1, axis=1)[:, :k]
        columns, costs = np.take_along_axis(columns, best, axis=1), np.take_along_axis(costs, best, axis=1)
    if ordered:
        order = np.lexsort((columns, costs), axis=1) if columns.size else columns
        columns, costs = np.take_along_axis(columns, order, axis=1), np.take_along_axis(costs, order, axis=1)
    return columns, costs
