import pytest
import torch

from ragcun.losses import EppsPulley, SIGReg
from ragcun.losses.epps_pulley import epps_pulley_expected_null


def gaussian(n: int = 512, d: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_near_null_on_standard_gaussian() -> None:
    value = SIGReg(num_slices=256)(gaussian()).item()
    assert value == pytest.approx(epps_pulley_expected_null(), rel=0.2)


@pytest.mark.parametrize(
    "distort",
    [lambda x: x + 1.0, lambda x: 3.0 * x, lambda x: 0.2 * x, lambda x: x[:, :1].expand_as(x).contiguous()],
    ids=["shifted", "scaled-up", "scaled-down", "collapsed"],
)
def test_large_on_non_gaussian(distort) -> None:
    baseline = SIGReg(num_slices=256)(gaussian()).item()
    distorted = SIGReg(num_slices=256)(distort(gaussian())).item()
    assert distorted > 10 * baseline


def test_directions_fresh_each_step_and_reproducible() -> None:
    sigreg = SIGReg(num_slices=8, seed=3)
    first = sigreg.directions(16, 0, torch.device("cpu"), torch.float32)
    assert torch.allclose(first.norm(dim=0), torch.ones(8))
    assert torch.equal(first, SIGReg(num_slices=8, seed=3).directions(16, 0, torch.device("cpu"), torch.float32))
    assert not torch.equal(first, sigreg.directions(16, 1, torch.device("cpu"), torch.float32))
    x = gaussian(64, 16)
    a, b = sigreg(x), sigreg(x)
    assert sigreg.step == 2 and a.item() != b.item()


def test_gradient_descent_on_sigreg_alone_reaches_gaussian() -> None:
    torch.manual_seed(0)
    x = (0.3 * torch.randn(256, 16) + 2.0).requires_grad_()
    # The same points every step: principal directions estimated from them, and a memory of their earlier
    # positions, would test them against themselves. Fresh batches are the shape-aware test's premise (below).
    sigreg = SIGReg(num_slices=128, num_principal=0)
    optimizer = torch.optim.Adam([x], lr=0.05)
    start = sigreg(x).item()
    for _ in range(300):
        optimizer.zero_grad()
        loss = sigreg(x)
        loss.backward()
        assert torch.isfinite(x.grad).all()
        optimizer.step()
    end = SIGReg(num_slices=512, seed=99, num_principal=0)(x.detach()).item()
    assert end < start / 20
    assert x.detach().mean(0).norm() < 0.5
    assert 0.7 < x.detach().var(0).mean() < 1.3


def fit_linear_map(sigreg: SIGReg, steps: int = 300, dim: int = 64, batch: int = 64) -> float:
    """Train a linear map on SIGReg alone from a shifted source with variances 0.09-9; its ‖Cov − I‖_F after
    (benchmarks/sigreg_toy.py in small)."""
    generator = torch.Generator().manual_seed(0)
    std = torch.logspace(-0.52, 0.48, dim)[torch.randperm(dim, generator=generator)]  # 0.3 ... 3
    shift = torch.full((dim,), 3.0 / dim**0.5)
    torch.manual_seed(0)
    linear = torch.nn.Linear(dim, dim)
    torch.nn.init.eye_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        optimizer.zero_grad()
        sigreg(linear(shift + std * torch.randn(batch, dim, generator=generator))).backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        y = linear(shift + std * torch.randn(20_000, dim, generator=generator))
    return float((torch.cov(y.T) - torch.eye(dim)).norm())


def test_principal_slices_shape_a_map_that_random_slices_leave_anisotropic() -> None:
    random_only = fit_linear_map(SIGReg(num_slices=256, num_principal=0))
    shape_aware = fit_linear_map(SIGReg(num_slices=256, num_principal=64))
    assert shape_aware < 0.6 * random_only, (shape_aware, random_only)


def test_bf16_input_is_computed_in_float32() -> None:
    x = gaussian()
    assert SIGReg(num_slices=64)(x.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("rows", [0, 1])
def test_too_small_batch_is_refused(rows: int) -> None:
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        SIGReg()(torch.randn(rows, 8))


def test_non_finite_embeddings_are_refused() -> None:
    x = gaussian(8, 4)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite embeddings in 1 of 8 rows"):
        SIGReg()(x)


def test_wrong_shape_and_bad_slices() -> None:
    with pytest.raises(ValueError, match="batch, dim"):
        SIGReg()(torch.randn(4, 2, 3))
    with pytest.raises(ValueError, match="num_slices"):
        SIGReg(num_slices=0)


# ---------------------------------------------------------------- shape-aware options: principal slices + memory
def anisotropic(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """Variances spread 0.25-1.75 (mean 1): a random slice sees ~1, the eigen-directions see the spread."""
    return torch.randn(n, d, generator=generator) * torch.linspace(0.25, 1.75, d).sqrt()


def stream(sigreg: SIGReg, sample, steps: int, batch: int, d: int, seed: int = 0) -> list[float]:
    """The statistic, step after step, on fresh training batches (gradients on, as in training)."""
    generator = torch.Generator().manual_seed(seed)
    return [sigreg(sample(batch, d, generator).requires_grad_()).item() for _ in range(steps)]


def standard(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(n, d, generator=generator)


def test_null_does_not_move_once_principal_slices_and_memory_are_on() -> None:
    # The directions come from embeddings no longer tested: on N(0, I) every slice stays N(0, 1). Taken from
    # the tested embeddings instead, the extreme eigen-directions of 1,000 samples in 64-d would read ~1.5x
    # variance and the statistic would be far above the null.
    sigreg = SIGReg(num_slices=256, num_principal=64, memory_size=4096, principal_refresh=2)
    values = stream(sigreg, standard, steps=48, batch=64, d=64)
    assert sigreg.principal.current is not None and sigreg.memory.global_count > 64
    assert sum(values[-24:]) / 24 == pytest.approx(epps_pulley_expected_null(), rel=0.15)


def test_principal_slices_see_anisotropy_that_random_slices_miss() -> None:
    null = stream(SIGReg(num_principal=64), standard, steps=40, batch=256, d=128)[-16:]
    shaped = stream(SIGReg(num_principal=64), anisotropic, steps=40, batch=256, d=128)[-16:]
    random_only = stream(SIGReg(), anisotropic, steps=40, batch=256, d=128)[-16:]
    assert sum(shaped) > 3 * sum(null)
    assert sum(random_only) < 1.5 * sum(null)


def test_no_principal_is_the_random_sketch_exactly() -> None:
    x = gaussian(64, 16)
    sigreg = SIGReg(num_slices=32, seed=2, num_principal=0)
    assert sigreg.memory is None and sigreg.principal is None
    expected = EppsPulley()(x @ sigreg.directions(16, 0, x.device, x.dtype)).mean()
    assert sigreg(x).item() == pytest.approx(expected.item(), rel=1e-6)


def test_memory_is_bounded_by_size_and_age() -> None:
    by_size = SIGReg(num_slices=8, num_principal=64, memory_size=100, memory_max_age=50)
    stream(by_size, standard, steps=10, batch=30, d=8)
    assert by_size.memory.global_count == 90  # whole steps: a fourth would exceed 100
    by_age = SIGReg(num_slices=8, num_principal=64, memory_size=10_000, memory_max_age=3)
    stream(by_age, standard, steps=10, batch=30, d=8)
    assert [entry.step for entry in by_age.memory.entries] == [7, 8, 9]


def test_evaluation_neither_reads_nor_writes_the_memory() -> None:
    sigreg = SIGReg(num_slices=16, num_principal=64, memory_size=4096, principal_horizon=64)
    stream(sigreg, anisotropic, steps=8, batch=32, d=8)
    held, weight = sigreg.memory.global_count, sigreg.principal.weight
    x = anisotropic(32, 8, torch.Generator().manual_seed(5))
    # the batch alone, on the directions as they stand: what a fresh SIGReg with those directions computes
    alone = SIGReg(num_slices=16, num_principal=64, memory_size=4096, principal_horizon=64)
    alone.principal.current, alone.step = sigreg.principal.current.clone(), sigreg.step
    with torch.no_grad():
        assert sigreg(x).item() == pytest.approx(alone(x).item(), rel=1e-6)
    sigreg.eval()
    sigreg(gaussian(32, 8))
    assert sigreg.memory.global_count == held and sigreg.principal.weight == weight


def test_state_round_trip_resumes_exactly(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    kwargs = dict(num_slices=16, num_principal=64, memory_size=96, memory_max_age=4, principal_horizon=64, principal_refresh=3)
    straight = SIGReg(**kwargs)
    expected = stream(straight, anisotropic, steps=20, batch=16, d=8)
    first = SIGReg(**kwargs)
    generator = torch.Generator().manual_seed(0)
    head = [first(anisotropic(16, 8, generator).requires_grad_()).item() for _ in range(11)]
    save_file(first.state(), str(tmp_path / "state.safetensors"))
    resumed = SIGReg(**kwargs)
    resumed.load_state(load_file(str(tmp_path / "state.safetensors")))
    tail = [resumed(anisotropic(16, 8, generator).requires_grad_()).item() for _ in range(9)]
    assert resumed.principal.current is not None and resumed.memory.global_count > 0
    assert head + tail == pytest.approx(expected, rel=1e-6)


def test_reset_forgets_and_dimension_change_is_refused() -> None:
    sigreg = SIGReg(num_slices=8, num_principal=64)
    stream(sigreg, standard, steps=3, batch=8, d=6)
    with pytest.raises(ValueError, match="6-d ones from earlier steps.*reset"):
        sigreg(gaussian(8, 5).requires_grad_())
    sigreg.reset()
    assert sigreg(gaussian(8, 5).requires_grad_()).item() > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(memory_size=-1), "memory_size must be a positive integer \\(or 0"),
        (dict(memory_size=2.5), "memory_size"),
        (dict(num_principal=-3), "num_principal must be a positive integer \\(or 0"),
        (dict(num_principal="all"), "num_principal"),
        (dict(memory_max_age=0), "memory_max_age must be a positive integer, got 0"),
        (dict(principal_horizon=True), "principal_horizon"),
        (dict(principal_refresh=0), "principal_refresh"),
    ],
)
def test_bad_memory_and_direction_settings(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        SIGReg(**kwargs)


def test_trainer_callback_saves_and_restores_the_state(tmp_path) -> None:
    from types import SimpleNamespace

    from ragcun.training.monitor import SIGRegStepCallback

    kwargs = dict(num_slices=16, num_principal=64, memory_size=64, principal_horizon=32)
    trained = SIGReg(**kwargs)
    stream(trained, anisotropic, steps=6, batch=16, d=8)
    args = SimpleNamespace(output_dir=str(tmp_path), process_index=0, gradient_accumulation_steps=1, world_size=1)
    SIGRegStepCallback(trained).on_save(args, SimpleNamespace(global_step=6), None)
    checkpoint = tmp_path / "checkpoint-6"
    assert SIGRegStepCallback.state_file(checkpoint, 0).is_file()

    resumed = SIGReg(**kwargs)
    SIGRegStepCallback(resumed, resume_from=str(checkpoint)).on_train_begin(args, None, None)
    x = anisotropic(16, 8, torch.Generator().manual_seed(9)).requires_grad_()
    assert resumed(x).item() == pytest.approx(trained(x.detach().requires_grad_()).item(), rel=1e-6)

    old_checkpoint = tmp_path / "checkpoint-2"  # written before SIGReg had a state file: resumes empty
    old_checkpoint.mkdir()
    fresh = SIGReg(**kwargs)
    SIGRegStepCallback(fresh, resume_from=str(old_checkpoint)).on_train_begin(args, None, None)
    assert fresh.memory.global_count == 0 and fresh.principal.current is None
    # saved by one process, resumed by two: the memory's counts would be wrong, so nothing is restored
    other = SIGReg(**kwargs)
    SIGRegStepCallback(other, resume_from=str(checkpoint)).on_train_begin(
        SimpleNamespace(**{**vars(args), "world_size": 2}), None, None)
    assert other.memory.global_count == 0 and other.principal.current is None


def test_horizon_below_the_dimension_is_refused() -> None:
    sigreg = SIGReg(num_slices=8, num_principal=64, principal_horizon=4)
    with pytest.raises(ValueError, match="principal_horizon 4 is below the embedding dimension 8"):
        sigreg(gaussian(16, 8).requires_grad_())


def test_sigreg_loss_regularizes_every_column_of_a_batch_together() -> None:
    """SIGRegLoss (the stand-alone sentence-transformers loss) is SIGReg on all columns' embeddings at once."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    from ragcun.losses import SIGRegLoss

    class Lookup(torch.nn.Module):  # a model whose "tokenized" input is already the embedding
        def forward(self, features: dict) -> dict:
            return {**features, "sentence_embedding": features["x"]}

    model = SentenceTransformer(modules=[Lookup(), Dense(16, 16, activation_function=torch.nn.Identity())])
    anchors, positives = gaussian(64, 16, seed=1), gaussian(64, 16, seed=2) + 2.0
    loss = SIGRegLoss(model, num_slices=32, seed=5, num_principal=0)
    value = loss([{"x": anchors}, {"x": positives}], None)
    with torch.no_grad():
        both = torch.cat([model({"x": anchors})["sentence_embedding"], model({"x": positives})["sentence_embedding"]])
    expected = SIGReg(num_slices=32, seed=5, num_principal=0)(both)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    value.backward()
    assert model[1].linear.weight.grad is not None and model[1].linear.weight.grad.abs().sum() > 0
    assert loss.get_config_dict()["num_slices"] == 32 and "lejepa" in loss.citation.lower()
