"""The selection rule of docs/results.md, applied to held-out figures only (no test set is read).

Each system's held-out figures come from its run: a ``training_summary.json`` (the trained model's figures, and
the base's), or a ``heldout_metrics.json`` (the whitened base a top-layer run saves beside it). Among the systems
that are ``is_isotropic`` on the held-out sample, the rule picks the highest held-out MRR@10; within ``--tie`` of
it, the one listed first (list the systems from the fewest trained parameters up).

    python benchmarks/heldout_selection.py \\
        --system minilm-base=output/minilm-top-layers/training_summary.json:base_metrics \\
        --system whitened-base-381d=output/minilm-top-layers/whitened-base/heldout_metrics.json \\
        --system top2-whitened=output/minilm-top-layers/training_summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIGURES = ("mrr@10", "recall@10", "is_isotropic", "cov_floor_ratio", "is_gaussian", "marginal_ep_max",
           "marginal_ep_max_floor", "norm_ks")


def heldout_figures(spec: str) -> dict[str, float]:
    """``PATH`` or ``PATH:KEY``: a summary's trained figures (``isotropy_after``) or the ones under KEY."""
    path, _, key = spec.partition(":") if spec.count(":") == 1 and not Path(spec).is_file() else (spec, "", "")
    saved = json.loads(Path(path).read_text(encoding="utf-8"))
    if key:
        return saved[key]
    return saved.get("isotropy_after", saved)


def pick(systems: dict[str, dict[str, float]], tie: float) -> str | None:
    candidates = [name for name, figures in systems.items() if figures.get("heldout_is_isotropic")]
    if not candidates:
        return None
    best = max(systems[name]["heldout_mrr@10"] for name in candidates)
    return next(name for name in candidates if systems[name]["heldout_mrr@10"] >= best - tie)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", action="append", required=True, metavar="NAME=PATH[:KEY]")
    parser.add_argument("--tie", type=float, default=0.002)
    args = parser.parse_args()
    systems = {}
    for spec in args.system:
        name, _, source = spec.partition("=")
        systems[name] = heldout_figures(source)
    width = max(len(name) for name in systems) + 2
    print(f"{'system':<{width}}" + "".join(f"{figure:>22}" for figure in FIGURES))
    for name, figures in systems.items():
        print(f"{name:<{width}}" + "".join(f"{figures.get('heldout_' + figure, float('nan')):>22.4f}"
                                           for figure in FIGURES))
    choice = pick(systems, args.tie)
    print(f"\nselection rule (isotropic on the held-out sample, then the highest held-out MRR@10, ties within "
          f"{args.tie} to the first listed): {choice or 'no system is isotropic'}")


if __name__ == "__main__":
    main()
