"""Compare models side by side on BEIR folders and write the report files.

Each model is encoded once per corpus (cached on disk), then every figure — isotropy, retrieval,
separation, calibration — is computed from those embeddings with the model's own similarity and
prompts. Files are written beside and renamed, so an interrupted run never leaves a half-written
report in place of the previous one.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer

from ragcun.encoding.cache import DEFAULT_CACHE_DIR, encode_cached
from ragcun.encoding.memoized_base import MemoizedBase, head_of, memo_path, on_memoized_base
from ragcun.encoding.precision import check_precision, set_encoding_precision
from ragcun.evaluation import plots
from ragcun.evaluation.beir import BeirSplit, load_beir
from ragcun.evaluation.calibration import ReliabilityCurve, logistic_calibration, null_calibration
from ragcun.evaluation.metrics import rank, relevance_labels, retrieval_metrics, separation
from ragcun.evaluation.tables import markdown_table
from ragcun.gaussian import CorpusNull
from ragcun.identity import embedding_identity
from ragcun.io import atomic_write_text, ensure_writable_folder
from ragcun.isotropy import isotropy_figures, isotropy_report
from ragcun.model import fit_projection, load_base


@dataclass
class System:
    """One row of the comparison: a model (or a model plus post-hoc whitening) on one dataset."""

    name: str
    dataset: str
    similarity: str
    queries: np.ndarray
    documents: np.ndarray
    metrics: dict = field(default_factory=dict)


def check_output_dir(output_dir: Path) -> None:
    """Fail before any encoding if the reports could not be written."""
    try:
        ensure_writable_folder(output_dir, "Reports folder", "Choose a writable --output-dir.")
    except OSError as error:
        raise ValueError(str(error)) from error


def relevance_threshold(split: BeirSplit) -> int:
    """TREC-style graded qrels (0–3) count grade >= 2 as relevant; binary qrels count 1."""
    return 2 if max(g for judged in split.qrels.values() for g in judged.values()) >= 3 else 1


def encode_dataset(model: SentenceTransformer, model_key: str, split: BeirSplit, cache_dir: Path, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    def prompt(name: str) -> str | None:
        return name if name in model.prompts else None

    queries = encode_cached(model, model_key, split.query_texts, prompt("query"), cache_dir, batch_size)
    documents = encode_cached(model, model_key, split.corpus_texts, prompt("document"), cache_dir, batch_size)
    return queries, documents


def score_system(system: System, split: BeirSplit) -> ReliabilityCurve:
    threshold = relevance_threshold(split)
    ranking = rank(system.queries, system.documents, system.similarity, depth=100)
    labels = relevance_labels(ranking, split, threshold)
    system.metrics.update(retrieval_metrics(ranking, split, threshold))
    system.metrics.update(separation(ranking, labels))
    system.metrics.update(null_calibration(system.queries, system.documents, ranking, labels, split))
    calibration, curve = logistic_calibration(ranking, labels)
    system.metrics.update(calibration)
    return curve


def whitening(documents: np.ndarray, output_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Post-hoc PCA whitening fitted on a corpus: what a user could do instead of training.

    Returns (weight, bias) with ``x @ weight.T + bias`` ~ N(0, I) on that corpus. A corpus smaller
    than the embedding width can only be whitened to ``len(documents) - 1`` dimensions.
    """
    dim = min(output_dim or documents.shape[1], len(documents) - 1)
    weight, bias = fit_projection(documents, dim, "whiten")
    return weight.numpy().astype(np.float64), bias.numpy().astype(np.float64)


def load_for_evaluation(path: str, max_seq_length: int | None, precision: str,
                        revision: str | None = None) -> SentenceTransformer:
    """Every evaluated model, for the reports and for MTEB alike, at the same token cap and precision (a Hub id at
    ``revision`` when pinned)."""
    model = set_encoding_precision(load_base(path, revision=revision), precision)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def memoized_base(base_path: str, max_seq_length: int | None, precision: str, cache_dir: Path | None = None,
                  batch_size: int = 32, revision: str | None = None) -> MemoizedBase:
    """The frozen base at the evaluation's token cap and precision, memoized in the cache folder for the next run."""
    base = load_for_evaluation(base_path, max_seq_length, precision, revision)
    return MemoizedBase(base, memo_path(base_path, base, cache_dir or DEFAULT_CACHE_DIR, precision, revision),
                        batch_size=batch_size)


def with_memoized_base(model: SentenceTransformer, memo: MemoizedBase | None) -> SentenceTransformer:
    """A head on ``memo``'s frozen base is evaluated on the memoized base embeddings; any other model as it is."""
    head = head_of(model, memo.base) if memo is not None else None
    return model if head is None else on_memoized_base(model, memo, head)


def model_similarity(model: SentenceTransformer) -> str:
    """The similarity a model is judged with: its own, cosine when it names none (as sentence-transformers does)."""
    return str(getattr(model, "similarity_fn_name", None) or "cosine")


def embedding_key(path: str, name: str, precision: str, revision: str | None = None) -> str:
    """The cache identity of a model's embeddings: its files (a Hub id's commit), the name it is reported under,
    its precision."""
    return embedding_identity(path, name, precision, revision)


def evaluate_models(
    models: dict[str, str],
    datasets: list[Path],
    output_dir: Path,
    *,
    split_name: str = "test",
    max_seq_length: int | None = 256,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    whiten: bool = False,
    whiten_dim: int | None = None,
    precision: str = "float32",
    memo: MemoizedBase | None = None,
    revisions: dict[str, str] | None = None,
) -> list[System]:
    """``models`` maps a display name to a model path or Hub id. Returns every system with its metrics.

    ``precision="bfloat16"`` encodes with the transformer under bfloat16 autocast (:mod:`ragcun.encoding.precision`);
    its embeddings are cached under their own keys. With ``memo`` (a frozen base), the models that are a head on
    that base encode through it: the base encodes each text once for all of them. ``revisions`` pins the revision
    of models given by Hub id (keyed by path or Hub id, as in ``models``).
    """
    check_output_dir(output_dir)
    check_precision(precision)
    cache_dir = cache_dir or DEFAULT_CACHE_DIR
    splits = {Path(folder).name: load_beir(folder, split_name) for folder in datasets}  # bad folders fail here
    revisions = revisions or {}
    loaded = {name: with_memoized_base(load_for_evaluation(path, max_seq_length, precision, revisions.get(path)), memo)
              for name, path in models.items()}
    systems: list[System] = []
    curves: dict[str, ReliabilityCurve] = {}
    for name, model in loaded.items():
        key = embedding_key(models[name], name, precision, revisions.get(models[name]))
        similarity = model_similarity(model)
        for dataset, split in splits.items():
            queries, documents = encode_dataset(model, key, split, cache_dir, batch_size)
            if memo is not None:
                memo.save_memo()
            variants = [System(name, dataset, similarity, queries, documents)]
            if whiten:
                weight, bias = whitening(documents, whiten_dim)
                label = f"{name} + whitening" + (f" {weight.shape[0]}-d" if whiten_dim else "")
                variants.append(System(label, dataset, "euclidean", queries @ weight.T + bias, documents @ weight.T + bias))
            for system in variants:
                curve = score_system(system, split)
                curves[f"{system.name} ({system.dataset})"] = curve
                systems.append(system)
    heldout_rows = [row for name, path in models.items() if (row := heldout_isotropy_row(name, path)) is not None]
    write_reports(systems, curves, output_dir, heldout_rows)
    return systems


ISOTROPY_COLUMNS = isotropy_figures(
    "mean_norm", "norm_mean", "expected_norm_mean", "variance_mean", "variance_min", "variance_max", "cov_identity_fro",
    "cov_identity_fro_floor", "cov_floor_ratio", "mean_abs_offdiag_corr", "mean_abs_offdiag_corr_floor",
    "effective_rank", "isoscore", "sigreg", "is_isotropic", "marginal_ep_max", "marginal_ep_max_floor", "norm_ks",
    "is_gaussian")
# The report's isotropy table: the figures a reader needs to judge each criterion, from the rows' columns.
ISOTROPY_TABLE = isotropy_figures(
    "mean_norm", "variance_mean", "variance_min", "variance_max", "cov_floor_ratio", "mean_abs_offdiag_corr",
    "mean_abs_offdiag_corr_floor", "isoscore", "is_isotropic", "is_gaussian", among=ISOTROPY_COLUMNS)
PERFORMANCE_COLUMNS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "separation_standardized", "separation_auc",
                       "separation_raw", "null_ks", "pvalue_precision", "pvalue_recall", "null_ks_corpus",
                       "pvalue_precision_corpus", "pvalue_recall_corpus", "ece", "brier")
HELDOUT_DATASET = "held-out training sample"


def _csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def corpus_standardized(documents: np.ndarray) -> np.ndarray:
    """The corpus minus its mean, divided by its one average spread: what the corpus p-value null
    (:class:`ragcun.gaussian.CorpusNull`, fitted the same way) assumes is N(0, I).

    A shift and one scale leave every L2 ranking unchanged, so this view judges only the cloud's shape.
    """
    null = CorpusNull(documents.shape[1], min_documents=2)
    null.add(documents)
    centred = np.asarray(documents, dtype=np.float64) - null.location
    return centred / np.sqrt(null.variance) if null.fitted else centred


def heldout_isotropy_row(name: str, model_path: str) -> dict | None:
    """The isotropy the training run measured on its held-out rows (queries and documents of the training
    distribution, held out by query), from ``training_summary.json`` beside the model or in its parent."""
    for folder in (Path(model_path), Path(model_path).parent):
        summary_file = folder / "training_summary.json"
        if summary_file.is_file():
            try:
                final = json.loads(summary_file.read_text(encoding="utf-8")).get("final_metrics") or {}
            except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as error:
                warnings.warn(f"{summary_file} is unreadable ({error}): its held-out isotropy is left out of the report.",
                              stacklevel=2)
                return None
            figures = {key.removeprefix("heldout_"): value for key, value in final.items() if key.startswith("heldout_")}
            if "is_isotropic" not in figures:
                return None
            for verdict in ("is_isotropic", "is_gaussian"):  # logged as numbers, like every figure
                if verdict in figures:
                    figures[verdict] = bool(figures[verdict])
            return {"model": name, "dataset": HELDOUT_DATASET, "view": "raw",
                    **{k: figures[k] for k in ISOTROPY_COLUMNS if k in figures}}
    return None


ISOTROPY_CSV_COLUMNS = ["model", "dataset", "view", "n_documents", "dim", *ISOTROPY_COLUMNS]


def isotropy_rows_of(name: str, dataset: str, embeddings: np.ndarray) -> list[dict]:
    """The rows of isotropy_comparison.csv for one model's embeddings of one text sample: as output (``raw``) and
    ``corpus-standardized`` (the sample's mean removed, its one average spread divided out)."""
    rows = []
    for view, x in (("raw", embeddings), ("corpus-standardized", corpus_standardized(embeddings))):
        report = isotropy_report(x, sigreg_slices=256)
        rows.append({"model": name, "dataset": dataset, "view": view, "n_documents": len(embeddings),
                     "dim": embeddings.shape[1], **{k: report[k] for k in ISOTROPY_COLUMNS}})
    return rows


def write_isotropy_comparison(embeddings: dict[str, np.ndarray], output_dir: Path, dataset: str) -> list[dict]:
    """isotropy_comparison.csv and .png for models' embeddings of one text sample (a held-out split, say), the
    same table and figure as ``evaluate_models`` writes for a BEIR corpus; returns the rows."""
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    rows = [row for name, x in embeddings.items() for row in isotropy_rows_of(name, dataset, x)]
    atomic_write_text(output_dir / "isotropy_comparison.csv", _csv(rows, ISOTROPY_CSV_COLUMNS))
    plots.isotropy_figure(embeddings, output_dir / "isotropy_comparison.png")
    return rows


def write_reports(systems: list[System], curves: dict[str, ReliabilityCurve], output_dir: Path,
                  heldout_rows: list[dict] | None = None) -> None:
    isotropy_rows, performance_rows = [], []
    first_dataset = systems[0].dataset
    documents_for_plot = {}
    for system in systems:
        isotropy_rows += isotropy_rows_of(system.name, system.dataset, system.documents)
        performance_rows.append({"model": system.name, "dataset": system.dataset, "similarity": system.similarity,
                                 **system.metrics})
        if system.dataset == first_dataset:
            documents_for_plot[system.name] = system.documents
    isotropy_rows += heldout_rows or []
    atomic_write_text(output_dir / "isotropy_comparison.csv", _csv(isotropy_rows, ISOTROPY_CSV_COLUMNS))
    atomic_write_text(output_dir / "rag_performance_comparison.csv",
                 _csv(performance_rows, ["model", "dataset", "similarity", *PERFORMANCE_COLUMNS]))
    plots.isotropy_figure(documents_for_plot, output_dir / "isotropy_comparison.png")
    plots.performance_figure(performance_rows, output_dir / "rag_performance.png")
    plots.reliability_figure(curves, output_dir / "reliability.png")
    atomic_write_text(output_dir / "report.md", render_markdown(isotropy_rows, performance_rows, first_dataset))


def render_markdown(isotropy_rows: list[dict], performance_rows: list[dict], plotted_dataset: str) -> str:
    return f"""# Evaluation report

Each model is scored with its own similarity (cosine for a cosine model, L2 distance for a euclidean
one) and its own query/document prompts, by exact search over the whole corpus.

## Retrieval
Read: higher is better; nDCG@10 uses graded relevance, the others count grade >= 2 as relevant on
TREC-style 0–3 qrels and grade >= 1 otherwise (pytrec_eval).

{markdown_table(performance_rows, ["model", "dataset", "similarity", "ndcg@10", "recall@10", "recall@100", "mrr@10"])}

![retrieval](rag_performance.png)

## Separation
Read the **standardized** gap (best relevant score minus the mean of the 10 best non-relevant ones,
divided by the spread of the query's top-100 scores) and the AUC of relevant vs non-relevant among
the top 100: both are unit-free and comparable across models. The raw gap is in each similarity's
own unit (cosine vs L2 distance) and is **not** comparable across similarities.

{markdown_table(performance_rows, ["model", "dataset", "separation_standardized", "separation_auc", "separation_raw"])}

## Calibration
Read: `null_ks` is how far random non-relevant pairs are from the global null of N(0, I) embeddings
(‖q − d‖²/2 ~ χ²_D; 0 = exact fit), `null_ks_corpus` how far they are from the corpus null that
`GaussianRetriever` uses by default (the corpus's documents as N(μ, σ² I) with its own mean and spread,
given the query); `pvalue_precision` / `pvalue_recall` (global) and their `_corpus` twins are what the
threshold p < 0.01 ("closer than chance") retrieves among the top-100 candidates. ECE and Brier score a
logistic P(relevant | score) fitted on half of the queries and tested on the other half (lower is
better; the same under either null); see the reliability diagram.

{markdown_table(performance_rows, ["model", "dataset", "null_ks", "pvalue_precision", "pvalue_recall", "null_ks_corpus", "pvalue_precision_corpus", "pvalue_recall_corpus", "ece", "brier"])}

![reliability](reliability.png)

## Isotropy (document embeddings)
Read: N(0, I) has mean_norm ≈ 0, variances ≈ 1, ‖Cov − I‖_F near its sampling floor and mean
|off-diagonal correlation| near its floor; `is_isotropic` applies all four criteria, each against what
N(0, I) itself would show at this sample size. `raw` is the embeddings as output; `corpus-standardized`
subtracts the corpus's mean and divides by its one average spread (rankings unchanged), so it judges
the shape alone: one domain of an N(0, I) world is off-centre and narrower, but should still pass there.
The `{HELDOUT_DATASET}` rows, where a model folder has its training run beside it, are the training
run's own held-out queries and documents. The figure shows {plotted_dataset}, raw.

{markdown_table(isotropy_rows, ["model", "dataset", "view", *ISOTROPY_TABLE])}

![isotropy](isotropy_comparison.png)
"""
