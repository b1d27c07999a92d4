"""The Epps–Pulley statistic: how far a 1-D sample's characteristic function is from N(0, 1)'s.

It is the univariate test that SIGReg slices (LeJEPA, arXiv:2511.08544). Working on characteristic
functions keeps it smooth, bounded and differentiable, unlike moment- or CDF-based tests, and the
empirical characteristic function is a mean over samples, so it splits across processes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class EppsPulley(nn.Module):
    """T = N ∫ |φ̂(t) − e^{−t²/2}|² e^{−t²/2} dt, column by column.

    φ̂(t) = mean_n e^{i t xₙ}. The integrand is even, so the integral is taken over [0, ``t_max``]
    with the trapezoid rule on ``num_knots`` evenly spaced knots and doubled. Beyond t≈3 the
    weight e^{−t²/2} is below 1.1% and the target e^{−t²/2} too, so little is lost there.
    """

    def __init__(self, num_knots: int = 17, t_max: float = 3.0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if num_knots < 2:
            raise ValueError(f"num_knots must be at least 2 for the trapezoid rule, got {num_knots}.")
        if not t_max > 0:
            raise ValueError(f"t_max must be positive, got {t_max}.")
        self.num_knots = num_knots
        self.t_max = t_max
        knots = torch.linspace(0.0, t_max, num_knots, dtype=torch.float64)
        step = t_max / (num_knots - 1)
        trapezoid = torch.full((num_knots,), step, dtype=torch.float64)
        trapezoid[0] = trapezoid[-1] = step / 2
        gaussian_cf = torch.exp(-knots.square() / 2)
        # Doubling for the negative half-line is folded into the quadrature weights.
        weights = 2 * trapezoid * gaussian_cf
        # float32 for the loss (cast to the batch's dtype per call); float64 for the exact isotropy report.
        self.register_buffer("knots", knots.to(dtype), persistent=False)
        self.register_buffer("target_cf", gaussian_cf.to(dtype), persistent=False)
        self.register_buffer("weights", weights.to(dtype), persistent=False)

    def empirical_cf_sums(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Σₙ cos(t xₙ) and Σₙ sin(t xₙ) for each knot t and column of ``x`` (N, S): two (K, S) tensors.

        Sums rather than means, so that processes can add theirs before dividing by the global N.
        """
        angles = x.unsqueeze(1) * self.knots.to(x.dtype).view(1, -1, 1)  # (N, K, S)
        return torch.cos(angles).sum(0), torch.sin(angles).sum(0)

    def from_cf_sums(self, cos_sum: Tensor, sin_sum: Tensor, num_samples: int | Tensor) -> Tensor:
        """The statistic per column, given the (possibly all-reduced) sums and the global N."""
        cos_mean = cos_sum / num_samples
        sin_mean = sin_sum / num_samples
        target = self.target_cf.to(cos_mean.dtype).view(-1, 1)
        squared_error = (cos_mean - target).square() + sin_mean.square()  # (K, S)
        return num_samples * (self.weights.to(cos_mean.dtype).view(-1, 1) * squared_error).sum(0)

    def forward(self, x: Tensor) -> Tensor:
        """Statistic of each column of ``x``: (N,) gives a scalar, (N, S) gives (S,)."""
        squeeze = x.dim() == 1
        if squeeze:
            x = x.unsqueeze(1)
        if x.dim() != 2:
            raise ValueError(f"EppsPulley expects a (N,) or (N, S) tensor, got shape {tuple(x.shape)}.")
        statistic = self.from_cf_sums(*self.empirical_cf_sums(x), x.shape[0])
        return statistic.squeeze(0) if squeeze else statistic

    def extra_repr(self) -> str:
        return f"num_knots={self.num_knots}, t_max={self.t_max}"


def epps_pulley_expected_null(num_knots: int = 17, t_max: float = 3.0) -> float:
    """E[T] for an exact N(0, 1) sample of any size: N·E|φ̂−φ|² = 1 − e^{−t²} at each t, integrated.

    The level SIGReg sits at on true Gaussian data (about 1.05 for the defaults), whatever N is.
    """
    step = t_max / (num_knots - 1)
    total = 0.0
    for k in range(num_knots):
        t = k * step
        weight = step / 2 if k in (0, num_knots - 1) else step
        total += 2 * weight * math.exp(-t * t / 2) * (1 - math.exp(-t * t))
    return total
