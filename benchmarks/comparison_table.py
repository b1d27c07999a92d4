"""The comparison table of docs/results.md, printed from evaluate.py report folders.

One row per system and evaluation set, in the order of the study; a system with no report yet is printed
as "not yet measured" rather than left out, so the table can be committed while it fills.

    python benchmarks/comparison_table.py --reports docs/results/base docs/results/ragcun-mnrl ... \\
        --system "base EmbeddingGemma (cosine)=embeddinggemma-300m" \\
        --system "base + whitening 512-d (L2)=embeddinggemma-300m + whitening 512-d" ...
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

RETRIEVAL = [("ndcg@10", "nDCG@10"), ("recall@10", "R@10"), ("mrr@10", "MRR@10")]
SEPARATION = [("separation_standardized", "sep. (std)"), ("separation_auc", "AUC"), ("ece", "ECE"), ("null_ks", "null KS")]
ISOTROPY = [("mean_norm", "‖mean‖"), ("variance_mean", "var"), ("cov_floor_ratio", "Cov/floor"),
            ("mean_abs_offdiag_corr", "mean abs corr"), ("sigreg", "SIGReg"), ("is_isotropic", "isotropic")]


def read_reports(folders: list[Path]) -> tuple[dict, dict, dict]:
    """(model, dataset) -> retrieval row, (model, dataset) -> isotropy row, model -> STS Spearman."""
    performance, isotropy, sts = {}, {}, {}
    for folder in folders:
        if not (folder / "rag_performance_comparison.csv").is_file():
            continue
        for row in csv.DictReader((folder / "rag_performance_comparison.csv").open()):
            performance[(row["model"], row["dataset"])] = row
        for row in csv.DictReader((folder / "isotropy_comparison.csv").open()):
            isotropy[(row["model"], row["dataset"])] = row
        for result in (folder / "mteb").glob("*/*/LocalSTS-*.json"):
            model = result.parent.parent.name.split("__", 1)[-1]
            sts[model] = json.loads(result.read_text())["scores"]["test"][0]["main_score"]
    return performance, isotropy, sts


def cell(value: str | float | None) -> str:
    if value in (None, ""):
        return "–"
    if value in ("True", "False"):
        return "**yes**" if value == "True" else "no"
    number = float(value)
    return f"{number:.3g}" if abs(number) >= 100 else f"{number:.4f}" if abs(number) < 1 else f"{number:.2f}"


def table(systems: list[tuple[str, str]], datasets: list[str], performance: dict, isotropy: dict, sts: dict) -> str:
    lines = []
    header = ["system", "eval set", *[t for _, t in RETRIEVAL], "STS ρ", *[t for _, t in SEPARATION],
              *[t for _, t in ISOTROPY]]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join([":--", ":--"] + ["--:"] * (len(header) - 2)) + "|"]
    for label, model in systems:
        for dataset in datasets:
            row, iso = performance.get((model, dataset)), isotropy.get((model, dataset))
            if row is None:
                lines.append(f"| {label} | {dataset} | not yet measured |" + " |" * (len(header) - 3))
                continue
            base_model = model.split(" + ")[0]
            values = [cell(row[k]) for k, _ in RETRIEVAL] + [cell(sts.get(base_model) if " + " not in model else None)]
            values += [cell(row[k]) for k, _ in SEPARATION] + [cell(iso[k]) if iso else "–" for k, _ in ISOTROPY]
            lines.append(f"| {label} | {dataset} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=Path, nargs="+", required=True)
    parser.add_argument("--system", action="append", required=True, help="'label=model name in the reports'")
    parser.add_argument("--dataset", action="append", default=None, help="eval sets in order (default: all found)")
    args = parser.parse_args()
    systems = [tuple(item.split("=", 1)) for item in args.system]
    performance, isotropy, sts = read_reports(args.reports)
    datasets = args.dataset or sorted({dataset for _, dataset in performance})
    print(table(systems, datasets, performance, isotropy, sts))


if __name__ == "__main__":
    main()
