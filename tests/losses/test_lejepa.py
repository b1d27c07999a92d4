import pytest
import torch
from torch import nn

from ragcun import CachedLeJEPALoss, LeJEPALoss, build_model
from ragcun.losses import EuclideanMNRLoss, SIGReg
from tests.helpers import tiny_texts


def test_parts_are_weighted_terms() -> None:
    columns = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    loss = LeJEPALoss(nn.Identity(), lambda_contrastive=0.5, lambda_isotropy=0.2, num_slices=64, seed=4)
    parts = loss.compute_loss_from_embeddings(columns, None)
    assert set(parts) == {"contrastive", "sigreg"}
    mnrl = EuclideanMNRLoss(nn.Identity()).compute_loss_from_embeddings(columns, None)
    sigreg = SIGReg(num_slices=64, seed=4)(torch.cat(columns))  # all columns, one statistic
    assert parts["contrastive"].item() == pytest.approx(0.5 * mnrl.item())
    assert parts["sigreg"].item() == pytest.approx(0.2 * sigreg.item())


def test_isotropy_by_role_tests_queries_and_documents_apart() -> None:
    columns = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    loss = LeJEPALoss(nn.Identity(), lambda_isotropy=0.2, num_slices=64, seed=4, num_principal=0, isotropy_by_role=True)
    parts = loss.compute_loss_from_embeddings(columns, None)
    queries, documents = (SIGReg(num_slices=64, seed=4, num_principal=0) for _ in range(2))  # the same draws
    expected = (queries(columns[0]) + documents(torch.cat(columns[1:]))) / 2
    assert parts["sigreg"].item() == pytest.approx(0.2 * expected.item())
    assert loss.get_config_dict()["isotropy_by_role"] is True
    isotropy_only = LeJEPALoss(nn.Identity(), lambda_contrastive=0, num_slices=64, isotropy_by_role=True)
    with pytest.raises(ValueError, match="needs queries and documents"):
        isotropy_only.compute_loss_from_embeddings(columns[:1])


def test_each_role_keeps_its_own_principal_directions_and_resumes_with_them() -> None:
    """Shape-aware SIGReg by role: the queries' estimate sees only queries (here stretched along axis 0), the
    documents' only documents (along axis 1); the state round-trips, and a state of one shared SIGReg (written
    before the roles had their own) goes to both."""
    from ragcun.losses import SIGRegByRole

    generator = torch.Generator().manual_seed(0)
    stretch = torch.ones(8)
    loss = LeJEPALoss(nn.Identity(), lambda_contrastive=0, lambda_isotropy=1.0, num_slices=32, num_principal=2,
                      isotropy_by_role=True)
    assert isinstance(loss.sigreg, SIGRegByRole)
    for step in range(4):
        queries = torch.randn(64, 8, generator=generator) * stretch.index_fill(0, torch.tensor([0]), 5.0)
        documents = torch.randn(64, 8, generator=generator) * stretch.index_fill(0, torch.tensor([1]), 5.0)
        loss.sigreg.step = step
        loss.compute_loss_from_embeddings([queries, documents])
    strongest = {role: int(getattr(loss.sigreg, role).principal.current[:, 0].abs().argmax())
                 for role in SIGRegByRole.ROLES}
    assert strongest == {"queries": 0, "documents": 1}
    state = loss.sigreg.state()
    assert {key.split(".")[0] for key in state} == {"queries", "documents"}
    restored = SIGRegByRole(num_slices=32, num_principal=2)
    restored.load_state(state)
    assert restored.step == 4
    for role in SIGRegByRole.ROLES:
        assert torch.equal(getattr(restored, role).principal.current, getattr(loss.sigreg, role).principal.current)
    shared = SIGReg(num_slices=32, num_principal=2)
    shared(torch.randn(64, 8, generator=generator))
    shared(torch.randn(64, 8, generator=generator))
    older = SIGRegByRole(num_slices=32, num_principal=2)
    older.load_state(shared.state())
    assert older.queries.step == older.documents.step == shared.step


def test_a_cloud_gaussian_only_as_a_mix_of_its_roles_fails_the_test_by_role() -> None:
    """N(0, I) split at the median of one axis: the union is N(0, I), each role is a half-normal."""
    cloud = torch.randn(4000, 4, generator=torch.Generator().manual_seed(0))
    cloud = cloud[cloud[:, 0].argsort()]
    queries, documents = cloud[:2000], cloud[2000:]
    statistic = {}
    for by_role in (False, True):
        loss = LeJEPALoss(nn.Identity(), lambda_contrastive=0, lambda_isotropy=1.0, num_slices=256, seed=1,
                          num_principal=0, isotropy_by_role=by_role)
        statistic[by_role] = loss.compute_loss_from_embeddings([queries, documents])["sigreg"].item()
    assert statistic[False] < 3 and statistic[True] > 10 * statistic[False]


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
    assert config["num_principal"] == 0 and config["memory_size"] == 0  # LeJEPA's random slices, as recommended
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
    shape = dict(num_principal=64, memory_size=4096, memory_max_age=2, principal_horizon=32)
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


class Lookup(nn.Module):
    """A frozen "base": row ids -> unit vectors (what CachedEmbeddings gives head-only training)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", nn.functional.normalize(table, dim=-1))

    def forward(self, features: dict) -> dict:
        return {**features, "sentence_embedding": self.table[features["input_ids"]]}


class HeadOnLookup(nn.Module):
    def __init__(self, lookup: Lookup, weight: torch.Tensor) -> None:
        super().__init__()
        self.lookup, self.linear = lookup, nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data.copy_(weight)

    def forward(self, features: dict) -> dict:
        features = self.lookup(features)
        return {**features, "sentence_embedding": self.linear(features["sentence_embedding"])}


def anchor_setup(weight: torch.Tensor):
    lookup = Lookup(torch.randn(40, 16, generator=torch.Generator().manual_seed(0)))
    features = [{"input_ids": torch.arange(start, start + 8)} for start in (0, 8, 16)]
    model = HeadOnLookup(lookup, weight)
    return lookup, model, features


def test_anchor_is_the_kl_from_the_bases_in_batch_ranking_to_the_models() -> None:
    weight = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    lookup, model, features = anchor_setup(weight)
    loss = LeJEPALoss(model, lambda_isotropy=0, lambda_anchor=0.5, anchor_model=lookup, anchor_scale=3.0)
    parts = loss(features)
    assert set(parts) == {"contrastive", "anchor"}
    base = [lookup.table[f["input_ids"]] for f in features]
    teacher = (-torch.cdist(3.0 * base[0], 3.0 * torch.cat(base[1:]))).log_softmax(-1)
    mapped = [b @ weight.T for b in base]
    student = (-torch.cdist(mapped[0], torch.cat(mapped[1:]))).log_softmax(-1)
    expected = (teacher.exp() * (teacher - student)).sum(-1).mean()
    assert parts["anchor"].item() == pytest.approx(0.5 * expected.item(), rel=1e-4)
    parts["anchor"].backward()
    assert model.linear.weight.grad is not None and model.linear.weight.grad.abs().sum() > 0


def test_anchor_is_zero_for_the_scaled_base_and_grows_as_the_ranking_changes() -> None:
    lookup, keeps, features = anchor_setup(torch.eye(16) * 4.0)
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(2)))[0]
    _, rotates, _ = anchor_setup(rotation * 4.0)  # a rotation keeps every distance: the ranking too
    _, bends, _ = anchor_setup(torch.diag(torch.linspace(0.5, 7.5, 16)))  # stretching axes changes the ranking
    divergence = {name: LeJEPALoss(model, lambda_isotropy=0, lambda_anchor=1.0, anchor_model=lookup,
                                   anchor_scale=4.0)(features)["anchor"].item()
                  for name, model in (("keeps", keeps), ("rotates", rotates), ("bends", bends))}
    assert divergence["keeps"] == pytest.approx(0, abs=1e-5) and divergence["rotates"] == pytest.approx(0, abs=1e-4)
    assert divergence["bends"] > 0.01
    # unset, the scale is estimated on the batch: unit vectors in 16-d have variance ~1/16, so ~4, as keeps uses
    estimated = LeJEPALoss(keeps, lambda_isotropy=0, lambda_anchor=1.0, anchor_model=lookup)(features)["anchor"]
    assert estimated.item() < 0.1 * divergence["bends"]


def test_anchor_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="needs anchor_model"):
        LeJEPALoss(nn.Identity(), lambda_anchor=0.1)
    with pytest.raises(ValueError, match="lambda_anchor must be >= 0"):
        LeJEPALoss(nn.Identity(), lambda_anchor=-1.0, anchor_model=nn.Identity())
    with pytest.raises(ValueError, match="anchor_scale must be positive"):
        LeJEPALoss(nn.Identity(), lambda_anchor=0.1, anchor_model=nn.Identity(), anchor_scale=0.0)
    with pytest.raises(ValueError, match="does not support the anchor"):
        CachedLeJEPALoss(nn.Identity(), lambda_anchor=0.1, anchor_model=nn.Identity())
    assert "anchor_model" not in dict(LeJEPALoss(nn.Identity(), lambda_anchor=0.1, anchor_model=nn.Linear(2, 2)).named_modules())
