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

from ragcun.losses.epps_pulley import EppsPulley

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


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum across processes, with a backward that sums the gradients across processes too.

    Every process then holds the same global statistic, and each one's gradient is world_size
    times its share; DDP's gradient averaging divides that back out, so the update equals the
    single-process update on the concatenated batch.
    """
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor, op=dist.ReduceOp.SUM)


class SIGReg(nn.Module):
    """Mean Epps–Pulley statistic of the batch along ``num_slices`` random unit directions.

    Directions are drawn from a generator seeded with ``(seed, step)``: every process draws the same
    ones without communicating, and each call advances ``step`` so the next batch is tested on new
    directions. Set ``step`` (e.g. from the trainer's global step) to make a resumed run draw what
    the uninterrupted run would have drawn.
    """

    def __init__(self, num_slices: int = 1024, num_knots: int = 17, t_max: float = 3.0, seed: int = 0) -> None:
        super().__init__()
        if num_slices < 1:
            raise ValueError(f"num_slices must be a positive integer, got {num_slices}.")
        self.num_slices = num_slices
        self.seed = seed
        self.step = 0
        self.univariate = EppsPulley(num_knots=num_knots, t_max=t_max)

    def directions(self, dim: int, step: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(dim, num_slices) unit columns, identical on every process for the same step."""
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
        if _distributed():
            count = torch.tensor([num_samples], device=embeddings.device)
            dist.all_reduce(count)
            num_samples = int(count.item())
        if num_samples < 2:
            raise ValueError(
                f"SIGReg needs at least 2 embeddings in the (global) batch to compare with N(0, I), got {num_samples}. "
                "Use a batch size of 2 or more; the statistic grows more reliable with larger batches."
            )
        # cos(t·x) needs more precision than bf16/fp16 carries at |t·x| ~ 10.
        embeddings = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) else embeddings
        directions = self.directions(embeddings.shape[1], self.step, embeddings.device, embeddings.dtype)
        self.step += 1
        cos_sum, sin_sum = self.univariate.empirical_cf_sums(embeddings @ directions)
        if _distributed():
            cos_sum, sin_sum = _all_reduce_sum(cos_sum), _all_reduce_sum(sin_sum)
        return self.univariate.from_cf_sums(cos_sum, sin_sum, num_samples).mean()

    def extra_repr(self) -> str:
        return f"num_slices={self.num_slices}, seed={self.seed}"


class SIGRegLoss(nn.Module):
    """SIGReg as a stand-alone sentence-transformers loss over every input column of a batch."""

    def __init__(self, model: nn.Module, num_slices: int = 1024, num_knots: int = 17, t_max: float = 3.0, seed: int = 0):
        super().__init__()
        self.model = model
        self.sigreg = SIGReg(num_slices=num_slices, num_knots=num_knots, t_max=t_max, seed=seed)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        return self.sigreg(torch.cat(embeddings, dim=0))

    def get_config_dict(self) -> dict[str, Any]:
        univariate = self.sigreg.univariate
        return {"num_slices": self.sigreg.num_slices, "num_knots": univariate.num_knots, "t_max": univariate.t_max}

    @property
    def citation(self) -> str:
        return LEJEPA_CITATION
