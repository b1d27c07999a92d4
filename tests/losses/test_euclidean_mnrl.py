import math

import pytest
import torch
from torch import nn

from ragcun.losses import EuclideanMNRLoss, negative_l2_distance


def brute_force_loss(queries, docs_columns, scale: float) -> float:
    """Cross-entropy of −scale·‖q − d‖ over every document of the batch, with loops."""
    candidates = [d for column in docs_columns for d in column]
    total = 0.0
    for i, q in enumerate(queries):
        logits = [-scale * math.dist(q.tolist(), d.tolist()) for d in candidates]
        log_z = math.log(sum(math.exp(v - max(logits)) for v in logits)) + max(logits)
        total += log_z - logits[i]
    return total / len(queries)


@pytest.mark.parametrize("num_negative_columns", [0, 1, 3])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_matches_brute_force(num_negative_columns: int, scale: float) -> None:
    generator = torch.Generator().manual_seed(num_negative_columns)
    columns = [torch.randn(6, 5, generator=generator, dtype=torch.float64) for _ in range(2 + num_negative_columns)]
    loss = EuclideanMNRLoss(nn.Identity(), scale=scale)
    value = loss.compute_loss_from_embeddings(columns, None).item()
    assert value == pytest.approx(brute_force_loss(columns[0], columns[1:], scale), rel=1e-9)


def test_default_scale_and_config() -> None:
    loss = EuclideanMNRLoss(nn.Identity())
    assert loss.scale == 1.0
    assert loss.get_config_dict()["similarity_fct"] == "negative_l2_distance"
    assert loss.gather_across_devices is False  # not distributed here


def test_finite_gradient_at_zero_distance() -> None:
    queries = torch.randn(4, 8, requires_grad=True)
    docs = queries.detach().clone().requires_grad_()  # every positive at distance exactly 0
    loss = EuclideanMNRLoss(nn.Identity()).compute_loss_from_embeddings([queries, docs], None)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(queries.grad).all() and torch.isfinite(docs.grad).all()


def test_negative_l2_distance_matches_cdist() -> None:
    a, b = torch.randn(5, 16, dtype=torch.float64), torch.randn(7, 16, dtype=torch.float64)
    assert torch.allclose(negative_l2_distance(a, b), -torch.cdist(a, b), atol=1e-6)
