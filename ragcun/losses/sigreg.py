"""SIGReg: Sketched Isotropic Gaussian Regularization (LeJEPA, arXiv:2511.08544).

A distribution is N(0, I) if and only if every 1-D projection of it is N(0, 1) (Cramér–Wold), so
SIGReg projects the batch on many random unit directions and averages a univariate goodness-of-fit
statistic over them. Fresh directions each step make the test cover the whole sphere over training
at a cost linear in the batch size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from sentence_transformers.base.losses.merged_forward import embed_columns
from torch import Tensor, nn

from ragcun.losses.cross_batch_memory import CrossBatchMemory
from ragcun.losses.distributed import all_reduce_sum, is_distributed
from ragcun.losses.epps_pulley import EppsPulley
from ragcun.losses.principal_directions import PrincipalDirections

LEJEPA_CITATION = """
@misc{balestriero2025lejepa,
      title={LeJEPA: Provable and Scalable Self-Supervised Learning Without the Heuristics},
      author={Randall Balestriero and Yann LeCun},
      year={2025},
      eprint={2511.08544},
      archivePrefix={arXiv},
      primaryClass={cs.LG},
      url={https://arxiv.org/abs/2511.08544},
}
"""


class SIGReg(nn.Module):
    """Mean Epps–Pulley statistic of the batch along random and principal unit directions.

    **Random slices** (``num_slices``): directions drawn from a generator seeded with ``(seed, step)``, so
    every process draws the same ones without communicating and each call tests new ones (LeJEPA's sketch).
    Set ``step`` (e.g. from the trainer's global step) to make a resumed run draw what the uninterrupted run
    would have drawn. In D dimensions they see the mean and the overall scale, little of the covariance.

    **Principal slices** (``num_principal``, off by default, as LeJEPA and the recommended recipes; 64 is a good
    count when on): eigenvectors of a running second moment of
    *earlier* embeddings (:class:`~ragcun.losses.principal_directions.PrincipalDirections`) whose eigenvalues
    depart most from 1: where the cloud is most stretched, squeezed or offset. They exist once about D
    embeddings have been seen; before that the statistic is the random slices' alone.

    **Cross-batch memory** (``memory_size``, off by default): the principal slices are also tested on recent
    steps' detached embeddings (:class:`~ragcun.losses.cross_batch_memory.CrossBatchMemory`), so a batch of
    32 is judged against hundreds or thousands; gradients flow through the current batch only. It sharpens
    detection in small batches but misleads a model that moves faster than the memory ages
    (benchmarks/sigreg_toy.py), hence off. Random slices never use it: their directions change every call,
    so the memory would have to be re-projected each time, while the principal directions stay fixed for
    ``principal_refresh`` steps.

    The statistic is the mean of the two families' means (each weighs half, whatever its count). No
    direction is estimated from the embeddings it tests, so on N(0, I) data every slice is an exact N(0, 1)
    sample and the null stays at :func:`~ragcun.losses.epps_pulley.epps_pulley_expected_null` (about
    1.05). The memory and the estimate are read and written only in training mode with gradients enabled;
    in evaluation or under ``torch.no_grad()`` the batch alone is tested, on the random slices and on the
    principal directions as they stand. ``state()`` / ``load_state()`` carry the memory and the estimate
    across a resume. ``step`` advances on every call; in training the trainer callback sets it each step.

    Args:
        num_slices: random directions per call.
        num_principal: principal directions (those farthest from unit variance first); 0 switches them and
            the memory off, None uses all of them.
        memory_size: remembered embeddings (over all processes) the principal slices are tested with; 0: none.
        memory_max_age: steps a remembered embedding may stay: the bound on staleness.
        principal_horizon: embeddings over which the second moment is averaged (exponential fading); None:
            twice the embedding dimension, which follows a moving model closely and is still full rank.
        principal_refresh: steps between re-estimates of the principal directions (an eigendecomposition
            of a D x D matrix, plus re-projecting the memory).
    """

    def __init__(
        self,
        num_slices: int = 1024,
        num_knots: int = 17,
        t_max: float = 3.0,
        seed: int = 0,
        num_principal: int | None = 0,
        memory_size: int = 0,
        memory_max_age: int = 4,
        principal_horizon: int | None = None,
        principal_refresh: int = 1,
    ) -> None:
        super().__init__()
        _check_count("num_slices", num_slices, allow_zero=False)
        if num_principal is not None:
            _check_count("num_principal", num_principal, allow_zero=True)
        _check_count("memory_size", memory_size, allow_zero=True)
        if principal_horizon is not None:
            _check_count("principal_horizon", principal_horizon, allow_zero=False)
        for name, value in (("memory_max_age", memory_max_age), ("principal_refresh", principal_refresh)):
            _check_count(name, value, allow_zero=False)
        self.num_slices = num_slices
        self.num_principal = num_principal
        self.seed = seed
        self.step = 0
        self.univariate = EppsPulley(num_knots=num_knots, t_max=t_max)
        self.principal_refresh = principal_refresh
        shape_aware = num_principal != 0
        self.principal = PrincipalDirections(num_principal, principal_horizon) if shape_aware else None
        self.memory = CrossBatchMemory(memory_size, memory_max_age) if shape_aware and memory_size > 0 else None
        self._refreshed_at: int | None = None

    def directions(self, dim: int, step: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(dim, num_slices) random unit columns, identical on every process for the same step."""
        generator = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + step)
        directions = torch.randn(dim, self.num_slices, generator=generator)
        directions = directions / directions.norm(dim=0, keepdim=True)
        return directions.to(device=device, dtype=dtype)

    def forward(self, embeddings: Tensor) -> Tensor:
        if embeddings.dim() != 2:
            raise ValueError(f"SIGReg expects a (batch, dim) tensor, got shape {tuple(embeddings.shape)}.")
        if not torch.isfinite(embeddings).all():
            bad_rows = int((~torch.isfinite(embeddings)).any(dim=1).sum())
            raise ValueError(
                f"SIGReg got non-finite embeddings in {bad_rows} of {embeddings.shape[0]} rows. The model diverged "
                "or its inputs are broken: lower the learning rate, or train in fp32/bf16 instead of fp16."
            )
        num_samples = embeddings.shape[0]
        if is_distributed():
            count = torch.tensor([num_samples], device=embeddings.device)
            dist.all_reduce(count)
            num_samples = int(count.item())
        if num_samples < 2:
            raise ValueError(
                f"SIGReg needs at least 2 embeddings in the (global) batch to compare with N(0, I), got {num_samples}. "
                "Use a batch size of 2 or more; the statistic grows more reliable with larger batches."
            )
        self._check_dim(embeddings.shape[1])
        # cos(t·x) needs more precision than bf16/fp16 carries at |t·x| ~ 10: float32 in, and no autocast
        # turning the projections back into bf16 under a mixed-precision trainer.
        embeddings = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) else embeddings
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return self._statistic_of(embeddings, num_samples)

    def _statistic_of(self, embeddings: Tensor, num_samples: int) -> Tensor:
        learning = self.training and torch.is_grad_enabled()
        if learning:
            self._move_state(embeddings.device)  # e.g. restored on the CPU by a resume, trained on a GPU
            self._maybe_refresh(embeddings)

        directions = self.directions(embeddings.shape[1], self.step, embeddings.device, embeddings.dtype)
        statistics = [self._statistic(*self.univariate.empirical_cf_sums(embeddings @ directions), num_samples)]

        principal = self._principal_directions(embeddings)
        batch_sums = None
        if principal is not None:
            batch_sums = self.univariate.empirical_cf_sums(embeddings @ principal)
            cos_sum, sin_sum, count = *batch_sums, num_samples
            remembered = self.memory.cached_sums() if learning and self.memory is not None else None
            if remembered is not None:
                cos_sum, sin_sum = cos_sum + remembered[0].to(cos_sum), sin_sum + remembered[1].to(sin_sum)
                count += self.memory.global_count
            statistics.append(self._statistic(cos_sum, sin_sum, count))

        if learning:
            self._remember(embeddings.detach(), num_samples, batch_sums)
        self.step += 1
        # Each family weighs half, whatever its count: the sketch over the sphere and the shape. Both average
        # exact N(0, 1) slices on N(0, I) data, so the null stays where the random slices alone put it.
        return torch.stack([family.mean() for family in statistics]).mean()

    def _move_state(self, device: torch.device) -> None:
        if self.memory is not None:
            self.memory.to(device)
        if self.principal is not None:
            self.principal.to(device)

    def _statistic(self, cos_sum: Tensor, sin_sum: Tensor, num_samples: int) -> Tensor:
        """Per-slice statistic from this process's sums, added over processes first when distributed."""
        if is_distributed():
            cos_sum, sin_sum = all_reduce_sum(cos_sum), all_reduce_sum(sin_sum)
        return self.univariate.from_cf_sums(cos_sum, sin_sum, num_samples)

    def _principal_directions(self, embeddings: Tensor) -> Tensor | None:
        if self.principal is None or self.principal.current is None:
            return None
        return self.principal.current.to(device=embeddings.device, dtype=embeddings.dtype)

    def _maybe_refresh(self, embeddings: Tensor) -> None:
        """Re-estimate the principal directions every ``principal_refresh`` steps, and re-project the memory."""
        if self.principal is None or not self.principal.ready():
            return
        due = self._refreshed_at is None or not 0 <= self.step - self._refreshed_at < self.principal_refresh
        if not due:
            return
        self.principal.refresh()
        self._refreshed_at = self.step
        if self.memory is not None:
            principal = self._principal_directions(embeddings)
            self.memory.recompute_sums(
                lambda rows: self.univariate.empirical_cf_sums(rows.to(principal) @ principal)
            )

    def _remember(self, rows: Tensor, global_count: int, batch_sums: tuple[Tensor, Tensor] | None) -> None:
        """Put the batch in the memory; what leaves it (or the batch itself, without a memory) feeds the estimate."""
        if self.principal is None:
            return
        if self.memory is None:
            self.principal.absorb(rows, global_count)
            return
        cos_sum, sin_sum = (None, None) if batch_sums is None else (batch_sums[0].detach(), batch_sums[1].detach())
        if cos_sum is None and self.principal.current is not None:
            cos_sum, sin_sum = self.univariate.empirical_cf_sums(rows @ self.principal.current.to(rows))
        for evicted_rows, evicted_count in self.memory.push(rows, global_count, self.step, cos_sum, sin_sum):
            self.principal.absorb(evicted_rows, evicted_count)

    def _check_dim(self, dim: int) -> None:
        for holder, held in (("memory", self.memory), ("principal-direction estimate", self.principal)):
            if held is not None and held.dim is not None and held.dim != dim:
                raise ValueError(
                    f"SIGReg got {dim}-d embeddings while its {holder} holds {held.dim}-d ones from earlier steps. "
                    "Use one SIGReg per embedding width, or call reset() before changing it."
                )

    def reset(self) -> None:
        """Forget the memory and the principal-direction estimate (e.g. after changing the model under it)."""
        if self.memory is not None:
            self.memory.reset()
        if self.principal is not None:
            self.principal.reset()
        self._refreshed_at = None

    def state(self) -> dict[str, Tensor]:
        """What a resumed run needs to continue exactly: the step, the memory and the estimate (tensors only)."""
        state = {"step": torch.tensor(self.step)}
        if self._refreshed_at is not None:
            state["refreshed_at"] = torch.tensor(self._refreshed_at)
        if self.memory is not None:
            state.update({f"memory.{k}": v for k, v in self.memory.state().items()})
        if self.principal is not None:
            state.update({f"principal.{k}": v for k, v in self.principal.state().items()})
        return state

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state`; the memory is re-projected on the restored directions."""
        self.step = int(state["step"])
        self._refreshed_at = int(state["refreshed_at"]) if "refreshed_at" in state else None
        if self.principal is not None:
            self.principal.load_state({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("principal.")})
        if self.memory is not None:
            self.memory.load_state({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("memory.")})
            if self.principal is not None and self.principal.current is not None:
                principal = self.principal.current
                self.memory.recompute_sums(lambda rows: self.univariate.empirical_cf_sums(rows @ principal.to(rows)))

    def get_config_dict(self) -> dict[str, Any]:
        """The settings, for the model card and the training summary."""
        memory, principal = self.memory, self.principal
        return {
            "num_slices": self.num_slices,
            "num_knots": self.univariate.num_knots,
            "t_max": self.univariate.t_max,
            "seed": self.seed,
            "num_principal": 0 if principal is None else self.num_principal,
            "memory_size": 0 if memory is None else memory.size,
            "memory_max_age": None if memory is None else memory.max_age,
            "principal_horizon": None if principal is None else principal.horizon,
            "principal_refresh": None if principal is None else self.principal_refresh,
        }

    def extra_repr(self) -> str:
        memory = "off" if self.memory is None else f"{self.memory.size} x {self.memory.max_age} steps"
        principal = "off" if self.principal is None else ("all" if self.num_principal is None else self.num_principal)
        return f"num_slices={self.num_slices}, num_principal={principal}, memory={memory}, seed={self.seed}"


class SIGRegByRole(nn.Module):
    """SIGReg on queries and on documents apart, each with its own principal directions and memory; the statistic
    is the mean of the two.

    A model whose queries and documents form two clouds with different means (EmbeddingGemma's two prompts) can be
    N(0, I) as a mixture while neither role is. Testing each role apart asks both to be; one principal-direction
    estimate of the union would point at the union's shape, not at either role's. Both SIGRegs share the step (so
    they draw the same random slices) and are saved and restored together (``queries.*`` / ``documents.*`` keys).
    """

    ROLES = ("queries", "documents")

    def __init__(self, **sigreg_kwargs: Any) -> None:
        super().__init__()
        self.queries = SIGReg(**sigreg_kwargs)
        self.documents = SIGReg(**sigreg_kwargs)

    def forward(self, queries: Tensor, documents: Tensor) -> Tensor:
        return (self.queries(queries) + self.documents(documents)) / 2

    @property
    def step(self) -> int:
        return self.queries.step

    @step.setter
    def step(self, value: int) -> None:
        self.queries.step = self.documents.step = value

    def reset(self) -> None:
        self.queries.reset()
        self.documents.reset()

    def state(self) -> dict[str, Tensor]:
        return {f"{role}.{key}": value for role in self.ROLES for key, value in getattr(self, role).state().items()}

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state`; a state saved by one shared SIGReg (no role prefix) goes to both roles."""
        for role in self.ROLES:
            prefix = f"{role}."
            own = {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
            getattr(self, role).load_state(own or state)

    def get_config_dict(self) -> dict[str, Any]:
        return self.queries.get_config_dict()


def _check_count(name: str, value: object, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        what = "a positive integer" + (" (or 0 to switch it off)" if allow_zero else "")
        raise ValueError(f"{name} must be {what}, got {value!r}.")


class SIGRegLoss(nn.Module):
    """SIGReg as a stand-alone sentence-transformers loss over every input column of a batch (``SIGReg``'s arguments)."""

    def __init__(self, model: nn.Module, **sigreg_kwargs: Any):
        super().__init__()
        self.model = model
        self.sigreg = SIGReg(**sigreg_kwargs)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        return self.sigreg(torch.cat(embeddings, dim=0))

    def get_config_dict(self) -> dict[str, Any]:
        return self.sigreg.get_config_dict()

    @property
    def citation(self) -> str:
        return LEJEPA_CITATION
