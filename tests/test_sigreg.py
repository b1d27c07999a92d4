import pytest
import torch

from ragcun.losses import SIGReg
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
    sigreg = SIGReg(num_slices=128)
    optimizer = torch.optim.Adam([x], lr=0.05)
    start = sigreg(x).item()
    for _ in range(300):
        optimizer.zero_grad()
        loss = sigreg(x)
        loss.backward()
        assert torch.isfinite(x.grad).all()
        optimizer.step()
    end = SIGReg(num_slices=512, seed=99)(x.detach()).item()
    assert end < start / 20
    assert x.detach().mean(0).norm() < 0.5
    assert 0.7 < x.detach().var(0).mean() < 1.3


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
