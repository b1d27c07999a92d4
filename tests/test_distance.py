"""ragcun.distance: the L2 distances the evaluation, the loss, the retriever and the calibration share."""

from __future__ import annotations

import numpy as np
import torch

from ragcun.distance import l2_distances, paired_squared_l2, squared_l2
from ragcun.evaluation.metrics import similarity_scores
from ragcun.losses import negative_l2_distance


def direct(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def test_every_pair_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 16)), rng.normal(loc=0.5, size=(7, 16))
    np.testing.assert_allclose(l2_distances(a, b), direct(a, b), rtol=1e-12)
    np.testing.assert_allclose(squared_l2(a, b), direct(a, b) ** 2, rtol=1e-12)


def test_the_evaluation_and_the_loss_score_the_same_distances() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 32)), rng.normal(size=(9, 32))
    np.testing.assert_array_equal(similarity_scores(a, b, "euclidean"), -l2_distances(a, b))
    loss_logits = negative_l2_distance(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(loss_logits, -l2_distances(a, b), rtol=1e-12)  # the same expansion, in float64


def test_a_coincident_pair_is_at_zero_with_a_finite_gradient_in_the_loss() -> None:
    a = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    assert l2_distances(a.detach().numpy(), a.detach().numpy()).diagonal().max() < 1e-6
    negative_l2_distance(a, a).sum().backward()
    assert torch.isfinite(a.grad).all()


def test_paired_distances_match_a_direct_computation_and_stay_exact_for_close_pairs() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 16)), rng.normal(size=(10, 16))
    np.testing.assert_allclose(paired_squared_l2(a, b), ((a - b) ** 2).sum(1), rtol=1e-14)
    candidates = rng.normal(size=(3, 4, 16))  # each query against its own candidates, broadcast
    np.testing.assert_allclose(paired_squared_l2(a[:3, None, :], candidates),
                               ((a[:3, None, :] - candidates) ** 2).sum(-1), rtol=1e-14)
    close = a + 1e-9  # the expansion loses such a pair to cancellation; the difference does not
    np.testing.assert_allclose(np.sqrt(paired_squared_l2(a, close)), 1e-9 * 4, rtol=1e-6)
