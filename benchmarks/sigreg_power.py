"""What SIGReg can see: its statistic on N(0, I) vs on the departures trained models show.

Part 1, one batch at a time (random slices only, the LeJEPA sketch): a mean offset ``μ`` spread over D
dimensions shifts a random projection by only about ``‖μ‖/√D``, while a batch of N samples estimates that
projection's mean only to ``1/√N``, so a small offset is lost in a small batch's noise, whatever the loss
weight λ. Cases: the null, the offset and per-dimension variances the trained EmbeddingGemma model had on
SciFact (‖mean‖ 6.1, variances 0.03–1.06, docs/results.md), and the ``is_isotropic`` limit (‖mean‖ 0.5).
``excess`` is the mean statistic minus the null's; ``z`` is that excess in units of the null's spread.

Part 2, step after step (as in training): the covariance cases that random slices cannot see — variances
spread 0.25–1.75 (mean 1), and half the coordinates in pairs correlated 0.6 — for three settings:
random slices only, principal slices without the memory (``SIGReg()``'s defaults), and principal slices with
a cross-batch memory of 4 steps. ``x null`` is the statistic over the N(0, I) stream's; the target is ≥ 3 at
batch 256 with the defaults.

    python benchmarks/sigreg_power.py [--dim 512] [--batches 32 128 512 2048] [--stream-batches 32 256 4096]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch

from ragcun.losses import SIGReg

Sampler = Callable[[int, torch.Generator], torch.Tensor]


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


def covariance_clouds(dim: int, generator: torch.Generator) -> dict[str, Sampler]:
    """Samplers with trace(Σ) = D, so that every random slice has variance ≈ 1 on average."""
    std = torch.linspace(0.25, 1.75, dim)[torch.randperm(dim, generator=generator)].sqrt()
    quarter = dim // 4

    def paired(n: int, g: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, dim, generator=g)
        first, second = z[:, :quarter], 0.6 * z[:, :quarter] + 0.8 * z[:, quarter : 2 * quarter]
        return torch.cat([first, second, z[:, 2 * quarter :]], dim=1)

    return {
        "N(0, I)": lambda n, g: torch.randn(n, dim, generator=g),
        "variances 0.25-1.75": lambda n, g: std * torch.randn(n, dim, generator=g),
        "half in pairs, corr 0.6": paired,
    }


STREAM_SETTINGS = {
    "random slices only": dict(num_principal=0),
    "defaults (principal, no memory)": dict(),
    "principal + memory (4 steps)": dict(memory_size=4096, memory_max_age=4),
}


def one_batch_table(args: argparse.Namespace) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    sigreg = SIGReg(num_slices=args.slices, seed=args.seed, num_principal=0)
    cases = departures(args.dim, generator)
    print(f"Part 1. One batch at a time: random slices only (mean over {args.repeats} batches, {args.slices} "
          f"fresh directions each), D={args.dim}")
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
    print("excess: statistic minus the N(0, I) row of the same N; z: excess / std of the N(0, I) statistic\n")


def stream_table(args: argparse.Namespace) -> None:
    print(f"Part 2. Step after step: mean statistic over the last {args.last} of {args.steps} training calls "
          f"(fresh batches, gradients on), D={args.dim}, {args.slices} random slices")
    print(f"{'setting':<34}{'N':>6}" + "".join(f"{name:>26}" for name in covariance_clouds(args.dim, torch.Generator())))
    for size in args.stream_batches:
        steps = args.steps if size < 1024 else max(args.last + 6, args.steps // 3)
        for setting, kwargs in STREAM_SETTINGS.items():
            clouds = covariance_clouds(args.dim, torch.Generator().manual_seed(args.seed))
            means = []
            for sample in clouds.values():
                sigreg = SIGReg(num_slices=args.slices, seed=args.seed, **kwargs)
                generator = torch.Generator().manual_seed(args.seed + 1)
                values = [sigreg(sample(size, generator).requires_grad_()).item() for _ in range(steps)]
                means.append(sum(values[-args.last :]) / args.last)
            cells = [f"{means[0]:.2f}"] + [f"{m:.2f} ({m / means[0]:.1f}x null)" for m in means[1:]]
            print(f"{setting:<34}{size:>6}" + "".join(f"{cell:>26}" for cell in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512, 2048])
    parser.add_argument("--stream-batches", type=int, nargs="+", default=[32, 256, 4096])
    parser.add_argument("--slices", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=8, help="part 1: batches drawn per cell")
    parser.add_argument("--steps", type=int, default=40, help="part 2: calls per stream (a third above batch 1024)")
    parser.add_argument("--last", type=int, default=8, help="part 2: calls averaged at the end of each stream")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    one_batch_table(args)
    stream_table(args)


if __name__ == "__main__":
    main()
