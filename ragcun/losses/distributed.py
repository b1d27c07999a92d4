"""What the losses need from torch.distributed: is there more than one process, and a sum that carries gradients."""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum across processes, with a backward that sums the gradients across processes too.

    Every process then holds the same global statistic, and each one's gradient is world_size
    times its share; DDP's gradient averaging divides that back out, so the update equals the
    single-process update on the concatenated batch.
    """
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor, op=dist.ReduceOp.SUM)
