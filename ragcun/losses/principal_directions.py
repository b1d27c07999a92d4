"""Directions along which a cloud of embeddings departs most from N(0, I), estimated from a running second moment.

A random unit direction in D dimensions averages over every coordinate, so its projected variance is about
trace(Σ)/D whatever the spread of Σ: random slices see the mean and the overall scale but almost nothing of
the covariance. The eigenvectors of the second moment E[xxᵀ] (about 0, the target's mean) are where the cloud
is most stretched or squeezed, and where it is offset (a mean μ adds μμᵀ). SIGReg tests those too.

The estimate must come from embeddings other than the ones tested: the extreme eigenvectors of a sample's own
covariance have extreme variance along that sample even when it is exactly N(0, I) (Marchenko–Pastur), and a
null that moves would be a test that lies. So :class:`PrincipalDirections` only *absorbs* embeddings that the
statistic no longer tests (those that left the cross-batch memory, or the batch just scored), and its
directions are independent of everything tested after them: on true N(0, I) data each projection stays
exactly N(0, 1), however stale or noisy the estimate. Staleness and noise cost power, never calibration.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from ragcun.losses.distributed import is_distributed


class PrincipalDirections:
    """An exponentially weighted second moment of absorbed embeddings and its most departing eigenvectors.

    Args:
        count: how many eigenvectors to use, those whose eigenvalue is farthest from 1 in log ratio
            (the most stretched and the most squeezed); ``None`` or more than the dimension: all of them.
        horizon: embeddings over which the moment is averaged; older ones fade as exp(−age/horizon), so a
            moving model is tracked within about that many embeddings. None: twice the dimension, the
            shortest memory that still gives a full-rank estimate.
    """

    def __init__(self, count: int | None, horizon: int | None) -> None:
        self.count = count
        self.horizon = horizon
        self.moment_sum: Tensor | None = None  # Σ w·xxᵀ in float64, identical on every process
        self.weight = 0.0  # Σ w: the effective number of absorbed embeddings
        self.current: Tensor | None = None  # (dim, count) unit columns in use, or None before the first refresh

    @property
    def dim(self) -> int | None:
        return None if self.moment_sum is None else self.moment_sum.shape[0]

    def absorb(self, rows: Tensor, global_count: int) -> None:
        """Add embeddings leaving the test (this process's ``rows``; ``global_count`` over all processes).

        Collective when distributed: every process must call it at the same step.
        """
        rows = rows.detach().to(torch.float64)
        horizon = self.horizon if self.horizon is not None else 2 * rows.shape[1]
        if horizon < rows.shape[1]:
            raise ValueError(
                f"principal_horizon {horizon} is below the embedding dimension {rows.shape[1]}: the estimate would "
                f"never reach full rank and the principal slices would never start. Use at least {rows.shape[1]}, "
                "or leave it unset (twice the dimension)."
            )
        moment = rows.T @ rows
        if is_distributed():
            dist.all_reduce(moment)
        decay = math.exp(-global_count / horizon)
        if self.moment_sum is None:
            self.moment_sum, self.weight = moment, float(global_count)
        else:
            self.moment_sum = decay * self.moment_sum.to(moment.device) + moment
            self.weight = decay * self.weight + global_count

    def ready(self) -> bool:
        """Enough absorbed embeddings for a full-rank estimate (at least one per dimension)."""
        return self.moment_sum is not None and self.weight >= self.moment_sum.shape[0]

    def refresh(self) -> Tensor:
        """Recompute the directions from the current estimate and return them: (dim, count) unit columns."""
        assert self.moment_sum is not None
        eigenvalues, eigenvectors = torch.linalg.eigh(self.moment_sum / self.weight)
        departure = eigenvalues.clamp_min(1e-12).log().abs()
        count = eigenvalues.numel() if self.count is None else min(self.count, eigenvalues.numel())
        chosen = departure.argsort(descending=True)[:count]
        self.current = eigenvectors[:, chosen].contiguous()
        return self.current

    def to(self, device: torch.device) -> None:
        if self.moment_sum is not None:
            self.moment_sum = self.moment_sum.to(device)
        if self.current is not None:
            self.current = self.current.to(device)

    def reset(self) -> None:
        self.moment_sum, self.weight, self.current = None, 0.0, None

    def state(self) -> dict[str, Tensor]:
        if self.moment_sum is None:
            return {}
        state = {"moment_sum": self.moment_sum.cpu(), "weight": torch.tensor(self.weight, dtype=torch.float64)}
        if self.current is not None:
            state["current"] = self.current.cpu()
        return state

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.reset()
        if "moment_sum" in state:
            self.moment_sum = state["moment_sum"].to(torch.float64)
            self.weight = float(state["weight"])
            self.current = state.get("current")
