"""Can SIGReg alone make a linear map's output N(0, I)? Old defaults (random slices) vs new (principal slices).

A linear map ``D → D`` (identity at start) is trained on the isotropy term alone, batch after batch, from a
Gaussian source with per-dimension variances log-spaced over 0.09–9 (shuffled) and a mean offset of norm 3.
The answer is known (any ``W`` with ``W Σ Wᵀ = I`` and ``b = −W μ``), so the figures say how close each
setting gets in a fixed number of Adam steps: ‖Cov − I‖_F of 20,000 fresh outputs over its sampling floor
sqrt(D(D+1)/(N−1)) (target: within 2x), ‖mean‖ (target < 0.5), and the eigenvalue range of Cov.

    python benchmarks/sigreg_toy.py [--dim 256] [--batch 64] [--steps 600 1500] [--lr 1e-2]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from ragcun.losses import SIGReg

SETTINGS = {
    "random slices only (old defaults)": dict(num_principal=0),
    "SIGReg() defaults": dict(),
    "defaults + memory (4 steps)": dict(memory_size=4096, memory_max_age=4),
    "all principal directions": dict(num_principal=None),
}


def train(setting: dict, dim: int, batch: int, steps: int, lr: float, seed: int, eval_samples: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)
    std = torch.logspace(math.log10(0.3), math.log10(3.0), dim)[torch.randperm(dim, generator=generator)]
    offset = torch.randn(dim, generator=generator)
    offset = 3.0 * offset / offset.norm()
    linear = torch.nn.Linear(dim, dim)
    torch.nn.init.eye_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.Adam(linear.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    sigreg = SIGReg(seed=seed, **setting)
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        sigreg(linear(offset + std * torch.randn(batch, dim, generator=generator))).backward()
        optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        fresh = torch.Generator().manual_seed(seed + 12345)
        output = linear(offset + std * torch.randn(eval_samples, dim, generator=fresh)).double()
    covariance = torch.cov(output.T)
    floor = math.sqrt(dim * (dim + 1) / (eval_samples - 1))
    eigenvalues = torch.linalg.eigvalsh(covariance)
    return {
        "cov_floor_ratio": float((covariance - torch.eye(dim, dtype=torch.float64)).norm()) / floor,
        "mean_norm": float(output.mean(0).norm()),
        "eig_min": float(eigenvalues.min()),
        "eig_max": float(eigenvalues.max()),
        "ms_per_step": 1000 * seconds / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, nargs="+", default=[600, 1500])
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam, cosine-decayed to 0 over the run")
    parser.add_argument("--eval-samples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"Linear map {args.dim}-d on SIGReg alone, batch {args.batch}, Adam lr {args.lr} (cosine); "
          f"figures on {args.eval_samples} fresh outputs. Target: cov/floor <= 2 and ||mean|| < 0.5.")
    print(f"{'setting':<36}{'steps':>7}{'cov/floor':>11}{'||mean||':>10}{'eig min':>9}{'eig max':>9}{'ms/step':>9}")
    for steps in args.steps:
        for name, setting in SETTINGS.items():
            r = train(setting, args.dim, args.batch, steps, args.lr, args.seed, args.eval_samples)
            print(f"{name:<36}{steps:>7}{r['cov_floor_ratio']:>11.2f}{r['mean_norm']:>10.3f}{r['eig_min']:>9.3f}"
                  f"{r['eig_max']:>9.2f}{r['ms_per_step']:>9.1f}", flush=True)
    print(f"floor: sqrt(D(D+1)/(N-1)) = {math.sqrt(args.dim * (args.dim + 1) / (args.eval_samples - 1)):.3f}")


if __name__ == "__main__":
    main()
