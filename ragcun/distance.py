"""L2 distance between embeddings: the one home of its formulas.

Two forms, each where it is the better one:

- :func:`squared_l2`, every pair of two sets by the expansion ‖a‖² + ‖b‖² − 2 a·b: one matrix product, no
  (A, B, dim) difference tensor. It works on numpy arrays and torch tensors alike (the same operators), so the
  evaluation's scores and the loss's logits are the very same numbers. Cancellation can leave a (near-)coincident
  pair slightly below 0, so each caller floors it before the root: :func:`l2_distances` at 0, the loss at a tiny
  positive value, because √ has an infinite slope at 0 and autograd would give NaN there.
- :func:`paired_squared_l2`, row against row from the difference itself: exact however close the pair, which is
  why the retriever's reported distances and the calibration's p-values use it.

The numpy store ranks by ‖x‖² − 2 q·x (:func:`ragcun.retrieval.stores`): the squared distance less ‖q‖², which
gives each query the same order without adding a large constant that costs float32 digits.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def squared_l2(a: Array, b: Array) -> Array:
    """(A, B) ‖aᵢ − bⱼ‖² for every pair of rows, by the expansion (may dip just below 0: floor before a root)."""
    return (a**2).sum(-1)[:, None] + (b**2).sum(-1)[None, :] - 2 * a @ b.T


def l2_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) ‖aᵢ − bⱼ‖ for every pair of rows, in float64."""
    squared = squared_l2(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return np.sqrt(np.maximum(squared, 0.0))


def paired_squared_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """‖a − b‖² along the last axis, the two broadcast against each other: (N, dim) and (N, dim) give (N,)."""
    difference = a - b
    return np.einsum("...i,...i->...", difference, difference)
