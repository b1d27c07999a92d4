"""Every figure of the evaluation report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from ragcun.evaluation.calibration import ReliabilityCurve  # noqa: E402


def _save(figure, path: Path) -> None:
    """Write beside, then rename: an interrupted run never leaves half a PNG in place of the last one."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(figure)
    tmp.replace(path)


def isotropy_figure(embeddings: dict[str, np.ndarray], path: Path, block: int = 32) -> None:
    """Per model: norm histogram vs the N(0, I) expectation, per-dimension means and variances,
    a covariance sub-block, and the eigenvalue spectrum (all on the embeddings as output)."""
    names = list(embeddings)
    figure, axes = plt.subplots(len(names), 4, figsize=(17, 3.4 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        x = np.asarray(embeddings[name], dtype=np.float64)
        dim = x.shape[1]
        norms = np.linalg.norm(x, axis=1)
        # counts, with the χ_D density scaled to the same bins: a normalized model (all norms 1) and the
        # N(0, I) expectation (norms near √D) stay visible on one axis
        edges = np.linspace(0.0, max(norms.max(), np.sqrt(dim) + 4) * 1.05, 80)
        row[0].hist(norms, bins=edges, alpha=0.7, label="model")
        centres = (edges[:-1] + edges[1:]) / 2
        row[0].plot(centres, len(norms) * np.diff(edges) * stats.chi.pdf(centres, df=dim), "k--",
                    label=f"N(0, I_{dim}): χ_{dim}")
        row[0].set_title(f"{name}: embedding norms")
        row[0].legend(fontsize=7)
        means, variances = x.mean(0), x.var(0, ddof=1)
        low, high = min(means.min(), variances.min(), 0.0) - 0.1, max(means.max(), variances.max(), 1.0) + 0.1
        bins = np.linspace(low, high, 60)  # fixed range: exact whitening gives zero-width data otherwise
        row[1].hist(means, bins=bins, alpha=0.6, label="means (target 0)")
        row[1].hist(variances, bins=bins, alpha=0.6, label="variances (target 1)")
        row[1].set_title("per-dimension mean and variance")
        row[1].legend(fontsize=7)
        covariance = np.cov(x, rowvar=False)[:block, :block]
        limit = max(1.0, np.abs(covariance).max())
        image = row[2].imshow(covariance, cmap="RdBu_r", vmin=-limit, vmax=limit)
        row[2].set_title(f"covariance, first {min(block, dim)} dims (target I)")
        figure.colorbar(image, ax=row[2], fraction=0.046)
        eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
        row[3].semilogy(np.arange(1, dim + 1), np.maximum(eigenvalues, 1e-12))
        row[3].set_ylim(max(min(eigenvalues.min(), 0.1), 1e-12) / 2, max(eigenvalues.max(), 10.0) * 2)
        row[3].axhline(1.0, color="k", linestyle="--", label="N(0, I)")
        row[3].set_title("covariance eigenvalue spectrum")
        row[3].legend(fontsize=7)
    figure.tight_layout()
    _save(figure, path)


def performance_figure(rows: list[dict], path: Path, metrics: tuple[str, ...] = ("ndcg@10", "recall@10", "mrr@10", "separation_standardized", "separation_auc")) -> None:
    """Grouped bars: one panel per metric, one group per dataset, one bar per model."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    width = 0.8 / max(len(models), 1)
    for axis, metric in zip(axes[0], metrics):
        for k, model in enumerate(models):
            values = [next((r[metric] for r in rows if r["model"] == model and r["dataset"] == d), np.nan) for d in datasets]
            axis.bar(np.arange(len(datasets)) + k * width, values, width, label=model)
        axis.set_xticks(np.arange(len(datasets)) + width * (len(models) - 1) / 2, datasets, fontsize=8)
        axis.set_title(metric)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    _save(figure, path)


def reliability_figure(curves: dict[str, ReliabilityCurve], path: Path) -> None:
    """Observed fraction relevant against predicted probability, per model (diagonal = calibrated)."""
    figure, axis = plt.subplots(figsize=(4.8, 4.4))
    axis.plot([0, 1], [0, 1], "k--", label="perfectly calibrated")
    for name, curve in curves.items():
        keep = curve.counts > 0
        axis.plot(curve.confidence[keep], curve.accuracy[keep], "o-", label=name)
    axis.set_xlabel("predicted P(relevant)")
    axis.set_ylabel("observed fraction relevant")
    axis.legend(fontsize=7)
    _save(figure, path)
