"""Whitening inside the loss (W-MSE, arXiv:2007.06346): the ranking loss sees the embeddings already whitened.

A whitening fitted after training gives every direction unit variance, the base's weak, noisy ones included, and
ranks worse for it. With the whitening in the training graph, the encoder is trained to make the *whitened* space
rank well. The covariance is the batch's, shrunk toward a running estimate of earlier batches (a batch of a few
hundred rows cannot estimate a D x D covariance alone); gradients flow through the batch's part. The whitening is
Cholesky's (W-MSE's choice: its gradient is stable where an eigendecomposition's is not).

The running estimate lives in the loss, not the model: a resumed run starts it again from its initial value, and
under several processes each keeps its own, from its own share of the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BatchWhitening(nn.Module):
    """x ↦ L⁻¹ (x − μ), with L Lᵀ = (n Σ_batch + m Σ_running) / (n + m) and μ likewise, m = ``memory_rows``.

    Args:
        dimension: width of the embeddings.
        memory_rows: how many rows the running estimate weighs as (0: the batch alone, which needs n > D).
        momentum: the running estimate's update per step (an exponential moving average of batch statistics).
        ridge: added to the covariance's diagonal, relative to its mean variance, so the factorisation never fails.
        mean, covariance: the running estimate's start (default: 0 and I); fit them on the model's outputs at step 0.
    """

    def __init__(self, dimension: int, memory_rows: int | None = None, momentum: float = 0.05, ridge: float = 1e-4,
                 mean: Tensor | None = None, covariance: Tensor | None = None) -> None:
        super().__init__()
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}.")
        self.dimension = dimension
        self.memory_rows = 4 * dimension if memory_rows is None else memory_rows
        self.momentum, self.ridge = momentum, ridge
        self.register_buffer("running_mean", torch.zeros(dimension) if mean is None else mean.detach().float().clone())
        self.register_buffer("running_covariance", torch.eye(dimension) if covariance is None
                             else covariance.detach().float().clone())

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if x.shape[1] != self.dimension:
            raise ValueError(f"BatchWhitening was built for width {self.dimension}, got embeddings of width "
                             f"{x.shape[1]}.")
        if self.memory_rows == 0 and n <= self.dimension:
            raise ValueError(f"Whitening a batch alone needs more rows than its width {self.dimension}, got {n}: "
                             "raise the batch size or keep a running estimate (memory_rows > 0).")
        x = x.float()
        weight = n / (n + self.memory_rows)
        batch_mean = x.mean(dim=0)
        mean = weight * batch_mean + (1 - weight) * self.running_mean
        centred = x - mean
        batch_covariance = centred.T @ centred / max(n - 1, 1)
        covariance = weight * batch_covariance + (1 - weight) * self.running_covariance
        covariance = covariance + self.ridge * covariance.diagonal().mean().detach() * torch.eye(
            self.dimension, device=x.device)
        factor = torch.linalg.cholesky(covariance)
        whitened = torch.linalg.solve_triangular(factor, centred.T, upper=False).T
        if self.training and torch.is_grad_enabled():  # a training step, not an evaluation of the loss
            with torch.no_grad():
                self.running_mean.lerp_(batch_mean.detach(), self.momentum)
                self.running_covariance.lerp_(batch_covariance.detach(), self.momentum)
        return whitened
