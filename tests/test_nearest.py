"""ragcun.nearest: exact k-best over blocks equals a full sort, ties in column order, k larger than the corpus."""

from __future__ import annotations

import numpy as np
import pytest

from ragcun.nearest import k_smallest


@pytest.mark.parametrize("block", [1, 7, 128, 5000])
def test_blockwise_selection_equals_a_full_sort(block: int) -> None:
    costs = np.random.default_rng(0).normal(size=(6, 1000))
    columns, best = k_smallest(((s, costs[:, s : s + block]) for s in range(0, 1000, block)), 9)
    expected = np.argsort(costs, axis=1, kind="stable")[:, :9]
    np.testing.assert_array_equal(columns, expected)
    np.testing.assert_array_equal(best, np.take_along_axis(costs, expected, axis=1))


def test_ties_keep_column_order_and_k_is_capped_by_the_corpus() -> None:
    costs = np.array([[1.0, 0.0, 1.0, 0.0]])
    columns, best = k_smallest([(0, costs[:, :2]), (2, costs[:, 2:])], 10)
    assert columns.tolist() == [[1, 3, 0, 2]] and best.tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_unordered_selection_holds_the_same_set() -> None:
    costs = np.random.default_rng(1).normal(size=(3, 50))
    columns, _ = k_smallest([(0, costs)], 5, ordered=False)
    assert [set(row) for row in columns.tolist()] == [set(row) for row in np.argsort(costs, axis=1)[:, :5].tolist()]
