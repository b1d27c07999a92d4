import pytest
import torch
from torch import nn

from ragcun import CachedLeJEPALoss, LeJEPALoss, build_model
from ragcun.losses import EuclideanMNRLoss, SIGReg
from tests.conftest import tiny_texts


def test_parts_are_weighted_terms() -> None:
    columns = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    loss = LeJEPALoss(nn.Identity(), lambda_contrastive=0.5, lambda_isotropy=0.2, num_slices=64, seed=4)
    parts = loss.compute_loss_from_embeddings(columns, None)
    assert set(parts) == {"contrastive", "sigreg"}
    mnrl = EuclideanMNRLoss(nn.Identity()).compute_loss_from_embeddings(columns, None)
    sigreg = SIGReg(num_slices=64, seed=4)(torch.cat(columns))  # all columns, one statistic
    assert parts["contrastive"].item() == pytest.approx(0.5 * mnrl.item())
    assert parts["sigreg"].item() == pytest.approx(0.2 * sigreg.item())


def test_zero_lambda_drops_the_term() -> None:
    columns = [torch.randn(4, 8), torch.randn(4, 8)]
    assert set(LeJEPALoss(nn.Identity(), lambda_isotropy=0).compute_loss_from_embeddings(columns)) == {"contrastive"}
    assert set(LeJEPALoss(nn.Identity(), lambda_contrastive=0).compute_loss_from_embeddings(columns)) == {"sigreg"}


def test_bad_lambdas_and_empty_batch() -> None:
    with pytest.raises(ValueError, match="lambda_isotropy must be >= 0"):
        LeJEPALoss(nn.Identity(), lambda_isotropy=-0.1)
    with pytest.raises(ValueError, match="both 0"):
        LeJEPALoss(nn.Identity(), lambda_contrastive=0, lambda_isotropy=0)
    with pytest.raises(ValueError, match="empty batch"):
        LeJEPALoss(nn.Identity()).compute_loss_from_embeddings([torch.empty(0, 4), torch.empty(0, 4)])


def test_config_and_citation_for_the_model_card() -> None:
    loss = LeJEPALoss(nn.Identity(), num_slices=256)
    config = loss.get_config_dict()
    assert config["num_slices"] == 256 and config["lambda_isotropy"] == 0.01 and config["scale"] == 1.0
    assert config["num_principal"] == 64 and config["memory_size"] == 0  # the shape-aware defaults
    assert "2511.08544" in loss.citation and "1807.03748" in loss.citation


@pytest.fixture(scope="module")
def tiny_model(tiny_base_dir):
    queries, passages = tiny_texts()
    return build_model(
        str(tiny_base_dir), output_dim=16, init="whiten", init_texts={"query": queries, "document": passages}, freeze_layers=1
    )


def _features(model, texts: list[str]) -> dict[str, torch.Tensor]:
    return model.preprocess(texts)


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def test_cached_loss_equals_uncached(tiny_model) -> None:
    """Step after step, so that SIGReg's memory and principal directions are in play by the last step."""
    queries, passages = tiny_texts()
    batches = [[queries[i : i + 12], passages[i : i + 12], passages[i + 12 : i + 24]] for i in (0, 24, 48, 12, 36)]
    shape = dict(memory_size=4096, memory_max_age=2, principal_horizon=32)
    results = []
    for loss in (
        LeJEPALoss(tiny_model, lambda_isotropy=0.05, num_slices=128, seed=1, **shape),
        CachedLeJEPALoss(tiny_model, lambda_isotropy=0.05, num_slices=128, seed=1, mini_batch_size=5, **shape),
    ):
        for batch in batches:
            tiny_model.zero_grad()
            parts = loss([_features(tiny_model, column) for column in batch], None)
            torch.stack(list(parts.values())).sum().backward()
        assert loss.sigreg.principal.current is not None and loss.sigreg.memory.global_count > 0
        results.append(({k: v.item() for k, v in parts.items()}, _grads(tiny_model)))
    (plain_parts, plain_grads), (cached_parts, cached_grads) = results
    assert cached_parts == pytest.approx(plain_parts, rel=1e-5)
    assert plain_grads.keys() == cached_grads.keys() and len(plain_grads) > 0
    for name, grad in plain_grads.items():
        # float32 summation order differs between the two paths: compare against the tensor's scale
        assert (grad - cached_grads[name]).abs().max() <= 1e-4 * grad.abs().max() + 1e-7, name


def test_cached_loss_without_grad_reports_parts(tiny_model) -> None:
    queries, passages = tiny_texts()
    loss = CachedLeJEPALoss(tiny_model, num_slices=32, mini_batch_size=4)
    with torch.no_grad():
        parts = loss([_features(tiny_model, queries[:6]), _features(tiny_model, passages[:6])], None)
    assert set(parts) == {"contrastive", "sigreg"} and all(torch.isfinite(v) for v in parts.values())
