"""What a batch's SIGReg can see: its statistic on N(0, I) vs on the departures the trained models show.

SIGReg compares each random 1-D projection of the batch with N(0, 1). A mean offset ``μ`` spread over
D dimensions shifts a random projection by only about ``‖μ‖/√D``, while a batch of N samples estimates
that projection's mean only to ``1/√N``, so a small offset is lost in the sampling noise of a small batch
(and so is its gradient), whatever the loss weight λ. This script measures the statistic
(``ragcun.losses.SIGReg``, as training computes it) on synthetic batches: the null, the offset and the
per-dimension variances that the trained EmbeddingGemma model still had on SciFact (‖mean‖ 6.1, variances
0.03–1.06, docs/results.md), and the ``is_isotropic`` limit (‖mean‖ 0.5). ``excess`` is the mean statistic
minus the null's; ``z`` is that excess in units of the null's spread, i.e. how clearly one batch tells the
departure from N(0, I).

    python benchmarks/sigreg_power.py [--dim 512] [--batches 32 128 512 2048] [--repeats 8]
"""

from __future__ import annotations

import argparse
import math

import torch

from ragcun.losses import SIGReg


def departures(dim: int, generator: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(mean, std) per dimension of each synthetic distribution."""
    direction = torch.randn(dim, generator=generator)
    direction /= direction.norm()
    zero, one = torch.zeros(dim), torch.ones(dim)
    variances = torch.linspace(0.03, 1.06, dim)[torch.randperm(dim, generator=generator)]
    return {
        "N(0, I)": (zero, one),
        "mean offset 0.5 (is_isotropic limit)": (0.5 * direction, one),
        "mean offset 6.1": (6.1 * direction, one),
        "variances 0.03-1.06": (zero, variances.sqrt()),
        "offset 6.1 + variances 0.03-1.06": (6.1 * direction, variances.sqrt()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512, 2048])
    parser.add_argument("--slices", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=8, help="batches drawn per cell (fresh directions each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(args.seed)
    sigreg = SIGReg(num_slices=args.slices, seed=args.seed)
    cases = departures(args.dim, generator)
    print(f"SIGReg statistic (mean over {args.repeats} batches, {args.slices} fresh directions each), D={args.dim}")
    print(f"{'distribution':<36}{'N':>6}{'statistic':>11}{'excess':>9}{'z':>9}")
    for size in args.batches:
        null = None
        for name, (mean, std) in cases.items():
            values = torch.tensor([sigreg(mean + std * torch.randn(size, args.dim, generator=generator)).item()
                                   for _ in range(args.repeats)])
            if null is None:
                null = values
            excess = values.mean() - null.mean()
            spread = null.std().item() if args.repeats > 1 else math.nan
            print(f"{name:<36}{size:>6}{values.mean().item():>11.3f}{excess.item():>9.3f}{excess.item() / spread:>9.1f}")
    print("excess: statistic minus the N(0, I) row of the same N; z: excess / std of the N(0, I) statistic")


if __name__ == "__main__":
    main()
