"""Two gloo processes on the CPU must reproduce one process on the concatenated batch, step after step.

Several steps, so that SIGReg's cross-batch memory and principal directions are in play by the last one.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ragcun import LeJEPALoss, SIGReg

WORLD_SIZE, LOCAL_BATCH, DIM_IN, DIM_OUT, COLUMNS, STEPS = 2, 5, 8, 6, 3, 6
# memory of 2 steps, directions re-estimated each step from a short horizon: both active from step 3 on
SHAPE = dict(num_principal=64, memory_size=4096, memory_max_age=2, principal_horizon=16)


def global_batch(step: int) -> torch.Tensor:
    """(columns, global batch, features): queries, positives, hard negatives."""
    generator = torch.Generator().manual_seed(11 + step)
    return torch.randn(COLUMNS, WORLD_SIZE * LOCAL_BATCH, DIM_IN, generator=generator, dtype=torch.float64)


def make_net() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(DIM_IN, DIM_OUT, dtype=torch.float64)


def losses() -> tuple[SIGReg, LeJEPALoss]:
    return (SIGReg(num_slices=64, seed=5, **SHAPE),
            LeJEPALoss(nn.Identity(), lambda_isotropy=0.3, num_slices=64, seed=5, **SHAPE))


def run_steps(net: nn.Module, rank: int | None) -> dict[str, torch.Tensor]:
    """STEPS steps on this process's share of each global batch; the last step's values and gradients."""
    sigreg, lejepa = losses()
    for step in range(STEPS):
        inputs = global_batch(step)
        if rank is not None:
            inputs = inputs[:, rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH]
        net.zero_grad()
        # one forward over all columns (DDP wants a single forward per backward), then split them again
        embeddings = list(net(inputs.reshape(-1, DIM_IN)).reshape(COLUMNS, -1, DIM_OUT).unbind(0))
        result = {"sigreg_alone": sigreg(torch.cat(embeddings)).detach()}
        parts = lejepa.compute_loss_from_embeddings(embeddings)
        torch.stack(list(parts.values())).sum().backward()
        result.update({name: value.detach() for name, value in parts.items()})
    assert sigreg.principal.current is not None and sigreg.memory.global_count > 0
    assert lejepa.sigreg.principal.current is not None
    return result


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=120))
    try:
        net = make_net()
        model = DistributedDataParallel(net)
        result = run_steps(model, rank)
        result.update({f"grad.{name}": p.grad for name, p in net.named_parameters()})
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # both results are on disk before either process leaves
    finally:
        dist.destroy_process_group()
    # Leave at once: gloo's background threads can deadlock an ordinary interpreter shutdown now and then.
    os._exit(0)


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    tmp = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(tmp / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def single_process() -> dict[str, torch.Tensor]:
    net = make_net()
    result = run_steps(net, None)
    result.update({f"grad.{name}": p.grad for name, p in net.named_parameters()})
    return result


@pytest.mark.slow
def test_sigreg_value_equals_single_process(rank_results, single_process) -> None:
    for result in rank_results:
        assert torch.allclose(result["sigreg_alone"], single_process["sigreg_alone"], rtol=1e-10)
        assert torch.allclose(result["sigreg"], single_process["sigreg"], rtol=1e-10)


@pytest.mark.slow
def test_contrastive_with_gathered_negatives_equals_single_process(rank_results, single_process) -> None:
    # each rank scores its own queries against every rank's documents; their mean is the global loss
    mean_over_ranks = torch.stack([r["contrastive"] for r in rank_results]).mean()
    assert torch.allclose(mean_over_ranks, single_process["contrastive"], rtol=1e-10)


@pytest.mark.slow
def test_gradients_after_ddp_averaging_equal_single_process(rank_results, single_process) -> None:
    names = [key for key in single_process if key.startswith("grad.")]
    assert names
    for result in rank_results:
        for name in names:
            assert torch.allclose(result[name], single_process[name], rtol=1e-8, atol=1e-12), name
