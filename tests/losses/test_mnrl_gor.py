"""The MNRL + GOR comparison loss equals its two sentence-transformers parts on the same embeddings."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    GlobalOrthogonalRegularizationLoss,
    MultipleNegativesRankingLoss,
)

from ragcun.losses import MNRLGORLoss
from tests.helpers import tiny_texts


@pytest.fixture(scope="module")
def base(tiny_base_dir) -> SentenceTransformer:
    return SentenceTransformer(str(tiny_base_dir), device="cpu")


def features(model: SentenceTransformer, texts: list[str]) -> dict:
    return model.preprocess(texts)


def test_parts_equal_sentence_transformers_losses(base) -> None:
    queries, passages = tiny_texts()
    batch = [features(base, queries[:8]), features(base, passages[:8])]
    loss = MNRLGORLoss(base, scale=20.0, gor_weight=0.5)
    parts = loss(batch)
    with torch.no_grad():
        embeddings = [base(dict(f))["sentence_embedding"] for f in batch]
    expected_mnrl = MultipleNegativesRankingLoss(base, scale=20.0).compute_loss_from_embeddings(embeddings, None)
    expected_gor = GlobalOrthogonalRegularizationLoss(base).compute_loss_from_embeddings(embeddings)
    assert parts["contrastive"].item() == pytest.approx(expected_mnrl.item(), rel=1e-5)
    assert parts["gor_mean"].item() == pytest.approx(0.5 * expected_gor["gor_mean"].item(), rel=1e-5)
    assert parts["gor_second_moment"].item() == pytest.approx(0.5 * expected_gor["gor_second_moment"].item(), rel=1e-5)
    sum(parts.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in base.parameters())


def test_zero_weight_drops_gor_and_negative_is_refused(base) -> None:
    queries, passages = tiny_texts()
    parts = MNRLGORLoss(base, gor_weight=0.0)([features(base, queries[:4]), features(base, passages[:4])])
    assert set(parts) == {"contrastive"}
    with pytest.raises(ValueError, match="gor_weight must be >= 0"):
        MNRLGORLoss(base, gor_weight=-1.0)
    assert "zhang2017learning" in MNRLGORLoss(base).citation
