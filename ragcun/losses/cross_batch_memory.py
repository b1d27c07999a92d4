"""A cross-batch memory for SIGReg: detached embeddings of recent steps, so a small batch is tested in a big crowd.

SIGReg's statistic is N times a squared distance between characteristic functions; a departure from N(0, 1)
of size δ along a direction is visible only once N·δ stands out of the null's O(1) noise. A batch of 32 hides
a mean offset at the isotropy limit (benchmarks/sigreg_power.py); the same batch judged together with the
last few thousand embeddings does not. Gradients flow through the current batch only.

Stale embeddings mislead when the model has moved since they were made: the statistic then judges a mixture
of old and new clouds, and the gradient pushes the current batch to make up for where the old ones were
(toward overshoot). Two bounds keep that small: ``size`` (embeddings held) and ``max_age`` (steps an
embedding may stay). Raise them when the model moves slowly (a frozen backbone, a small learning rate),
lower them when it moves fast.

The memory keeps whole steps, and counts them over all processes, so two processes holding their own halves
decide exactly as one process holding the concatenated batches would.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class _Entry:
    rows: Tensor  # this process's embeddings of one step, detached
    global_count: int  # that step's embeddings over all processes
    step: int
    cos_sum: Tensor | None = None  # cached Σ cos/sin of rows along the directions in use, (knots, directions)
    sin_sum: Tensor | None = None


class CrossBatchMemory:
    """FIFO of recent steps' embeddings, at most ``size`` of them (over all processes) and ``max_age`` steps old."""

    def __init__(self, size: int, max_age: int) -> None:
        self.size = size
        self.max_age = max_age
        self.entries: deque[_Entry] = deque()

    @property
    def global_count(self) -> int:
        return sum(entry.global_count for entry in self.entries)

    @property
    def dim(self) -> int | None:
        return self.entries[0].rows.shape[1] if self.entries else None

    def push(self, rows: Tensor, global_count: int, step: int, cos_sum: Tensor | None, sin_sum: Tensor | None) -> list[tuple[Tensor, int]]:
        """Keep this step's rows; return the (rows, global count) of the steps that fall out, oldest first."""
        self.entries.append(_Entry(rows.detach(), global_count, step, cos_sum, sin_sum))
        return self.evict(step)

    def evict(self, step: int) -> list[tuple[Tensor, int]]:
        """Drop steps older than ``max_age`` at ``step`` (or from a later step, after a reset of the counter),
        then the oldest until at most ``size`` embeddings remain."""
        evicted = []
        total = self.global_count
        while self.entries:
            oldest = self.entries[0]
            age = step - oldest.step
            if total <= self.size and 0 <= age < self.max_age:
                break
            self.entries.popleft()
            total -= oldest.global_count
            evicted.append((oldest.rows, oldest.global_count))
        return evicted

    def cached_sums(self) -> tuple[Tensor, Tensor] | None:
        """Σ cos and Σ sin of every held row along the directions in use, or None when empty."""
        if not self.entries:
            return None
        return (torch.stack([e.cos_sum for e in self.entries]).sum(0), torch.stack([e.sin_sum for e in self.entries]).sum(0))

    def recompute_sums(self, cf_sums) -> None:
        """Re-project every held step with ``cf_sums(rows) -> (cos_sum, sin_sum)``, after the directions changed."""
        for entry in self.entries:
            entry.cos_sum, entry.sin_sum = cf_sums(entry.rows)

    def to(self, device: torch.device) -> None:
        for entry in self.entries:
            entry.rows = entry.rows.to(device)
            if entry.cos_sum is not None:
                entry.cos_sum, entry.sin_sum = entry.cos_sum.to(device), entry.sin_sum.to(device)

    def reset(self) -> None:
        self.entries.clear()

    def state(self) -> dict[str, Tensor]:
        if not self.entries:
            return {}
        return {
            "rows": torch.cat([e.rows for e in self.entries]).cpu(),
            "local_counts": torch.tensor([e.rows.shape[0] for e in self.entries]),
            "global_counts": torch.tensor([e.global_count for e in self.entries]),
            "steps": torch.tensor([e.step for e in self.entries]),
        }

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.reset()
        if "rows" not in state:
            return
        for rows, global_count, step in zip(
            state["rows"].split(state["local_counts"].tolist()), state["global_counts"].tolist(), state["steps"].tolist()
        ):
            self.entries.append(_Entry(rows, int(global_count), int(step)))
