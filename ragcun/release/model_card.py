"""The model card of a released ragcun model: sentence-transformers' generated card plus ragcun's sections.

sentence-transformers already writes a card whenever a model is saved (``SentenceTransformerModelCardData``:
metadata, architecture, usage snippet with ``encode_query`` / ``encode_document``, training logs, framework
versions, loss citations). ragcun keeps that card and adds what it cannot know: how the model differs from
its base, the isotropy and retrieval / calibration tables from ``evaluate.py``, the recipe, the χ²
threshold, limitations and the citations of the method. The added body is ``model_card/template.md``.

Numbers only come from files: the model folder, its ``recipe.yaml`` / ``training_summary.json`` and the
evaluation reports. Without reports the card says the results are missing.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard
from sentence_transformers import SentenceTransformer

from ragcun.evaluation import tables
from ragcun.isotropy import isotropy_figures
from ragcun.training.head import BACKBONE_KEYS

ST_PLACEHOLDER_ID = "sentence_transformers_model_id"  # what sentence-transformers writes when no model_id is set
RAGCUN_TAGS = ["ragcun", "isotropic-gaussian", "euclidean-distance", "sigreg", "lejepa"]
CARD_TEMPLATE = "template.md"

EMBEDDINGGEMMA_CITATION = """@article{embedding_gemma_2025,
    title={EmbeddingGemma: Powerful and Lightweight Text Representations},
    author={Schechter Vera, Henrique and Dua, Sahil and others},
    publisher={Google DeepMind},
    year={2025},
    url={https://arxiv.org/abs/2509.20354}
}"""
MSMARCO_CITATION = """@article{bajaj2016msmarco,
    title={MS MARCO: A Human Generated MAchine Reading COmprehension Dataset},
    author={Bajaj, Payal and Campos, Daniel and Craswell, Nick and Deng, Li and Gao, Jianfeng and Liu, Xiaodong and Majumder, Rangan and McNamara, Andrew and Mitra, Bhaskar and Nguyen, Tri and others},
    journal={arXiv preprint arXiv:1611.09268},
    year={2016}
}"""

_ISOTROPY_TITLES = {"mean_norm": "‖mean‖", "variance_mean": "variance", "cov_floor_ratio": "‖Cov−I‖/floor",
                    "mean_abs_offdiag_corr": "mean abs corr", "effective_rank": "eff. rank", "sigreg": "SIGReg",
                    "is_isotropic": "is_isotropic", "is_gaussian": "is_gaussian"}
ISOTROPY_COLUMNS = [("model", "model"), ("dataset", "dataset"), ("view", "view"),
                    *((key, _ISOTROPY_TITLES[key]) for key in isotropy_figures(*_ISOTROPY_TITLES))]
TEXT_COLUMNS = frozenset({"model", "dataset", "similarity", "task", "split"})
RETRIEVAL_COLUMNS = [("model", "model"), ("dataset", "dataset"), ("similarity", "similarity"),
                     ("ndcg@10", "nDCG@10"), ("recall@10", "R@10"), ("mrr@10", "MRR@10"),
                     ("separation_standardized", "separation"), ("separation_auc", "AUC"),
                     ("null_ks", "null KS (global)"), ("null_ks_corpus", "null KS (corpus)"), ("ece", "ECE"),
                     ("brier", "Brier")]
MODEL_INDEX_METRICS = [("ndcg@10", "ndcg_at_10", "nDCG@10"), ("recall@10", "recall_at_10", "Recall@10"),
                       ("mrr@10", "mrr_at_10", "MRR@10")]
RECIPE_ROWS = ["base_model", "train_head_only", "head_layers", "output_dim", "init", "freeze_layers", "freeze_embeddings",
               "max_seq_length", "lambda_contrastive", "lambda_isotropy", "lambda_anchor", "num_slices", "num_principal",
               "memory_size", "mnrl_scale", "gradcache_mini_batch_size", "mine_hard_negatives",
               "per_device_train_batch_size", "learning_rate", "num_train_epochs", "max_steps", "warmup_ratio",
               "warmup_steps", "weight_decay", "batch_sampler", "seed"]


def card_template_text() -> str:
    """``model_card/template.md``: from a source checkout (editable installs), or from the wheel, which ships
    that folder as the package data ``ragcun.card_templates``."""
    checkout = Path(__file__).resolve().parents[2] / "model_card" / CARD_TEMPLATE
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    return resources.files("ragcun.card_templates").joinpath(CARD_TEMPLATE).read_text(encoding="utf-8")


@dataclass
class EvaluationResults:
    """The rows of an ``evaluate.py`` output folder, as the card shows them."""

    source: str
    model_name: str
    isotropy: list[dict[str, str]]
    retrieval: list[dict[str, str]]
    mteb: list[dict[str, Any]] = field(default_factory=list)
    figures: list[dict[str, str]] = field(default_factory=list)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _mteb_rows(mteb_dir: Path) -> list[dict[str, Any]]:
    """Main scores from mteb's results layout ``<dir>/<org>__<name>/<revision>/<task>.json``."""
    rows = []
    for result_file in sorted(mteb_dir.glob("*/*/*.json")):
        if result_file.name == "model_meta.json":
            continue
        data = json.loads(result_file.read_text(encoding="utf-8"))
        for split, scores in (data.get("scores") or {}).items():
            for score in scores:
                rows.append({"model": result_file.parent.parent.name.split("__", 1)[-1],
                             "task": data.get("task_name", result_file.stem), "split": split,
                             "subset": score.get("hf_subset", "default"), "main_score": score.get("main_score")})
    return rows


def load_evaluation(eval_dir: str | Path, model_name: str | None = None) -> EvaluationResults:
    """Read an ``evaluate.py --output-dir`` folder; ``model_name`` picks the released model's rows
    (default: the first model of the report, which is ``evaluate.py --model``)."""
    eval_dir = Path(eval_dir)
    retrieval_file, isotropy_file = eval_dir / "rag_performance_comparison.csv", eval_dir / "isotropy_comparison.csv"
    missing = [p.name for p in (retrieval_file, isotropy_file) if not p.is_file()]
    if missing:
        raise ValueError(f"{eval_dir} is not an evaluate.py report folder: {', '.join(missing)} missing. "
                         "Pass the --output-dir of evaluate.py, or leave --eval-dir out to release without results.")
    retrieval, isotropy = _read_csv(retrieval_file), _read_csv(isotropy_file)
    names = list(dict.fromkeys(row["model"] for row in retrieval))
    if not names:
        raise ValueError(f"{retrieval_file} has no rows: re-run evaluate.py.")
    model_name = model_name or names[0]
    if model_name not in names:
        raise ValueError(f"No rows for model {model_name!r} in {retrieval_file}; the report has {names}. "
                         "Pass one of them as --eval-name.")
    figures = [{"title": title, "path": f"evaluation/{name}"}
               for name, title in (("isotropy_comparison.png", "isotropy"), ("rag_performance.png", "retrieval"),
                                   ("reliability.png", "reliability"))
               if (eval_dir / name).is_file()]
    mteb = _mteb_rows(eval_dir / "mteb") if (eval_dir / "mteb").is_dir() else []
    return EvaluationResults(str(eval_dir.name), model_name, isotropy, retrieval, mteb, figures)


def _format(value: Any) -> str:
    if value in (None, ""):
        return "–"
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value  # True / False and names
    else:
        number = float(value)
    if math.isnan(number):
        return "–"
    if abs(number) >= 1000 or (number != 0 and abs(number) < 1e-3):
        return f"{number:.3g}"
    return f"{number:.4f}" if abs(number) < 10 else f"{number:.2f}"


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], bold_model: str | None = None) -> str:
    """A card table: :func:`ragcun.evaluation.tables.markdown_table` with the card's number format, names left and
    numbers right."""
    return tables.markdown_table(rows, columns, cell=_format, left_aligned=TEXT_COLUMNS, bold_model=bold_model)


def find_run_files(model_dir: Path) -> tuple[dict | None, dict | None]:
    """``recipe.yaml`` and ``training_summary.json`` of the run: beside the model or in its parent
    (``train.py`` writes the model to ``output_dir/final``)."""
    recipe = summary = None
    for folder in (model_dir, model_dir.parent):
        if recipe is None and (folder / "recipe.yaml").is_file():
            recipe = yaml.safe_load((folder / "recipe.yaml").read_text(encoding="utf-8"))
        if summary is None and (folder / "training_summary.json").is_file():
            summary = json.loads((folder / "training_summary.json").read_text(encoding="utf-8"))
    return recipe, summary


def _train_data_names(recipe: dict | None) -> list[str]:
    names = []
    for source in (recipe or {}).get("train_data") or []:
        path = source.get("path") if isinstance(source, dict) else source
        split = source.get("split") if isinstance(source, dict) else None
        name = Path(str(path)).name if "/" in str(path) and not _looks_like_hub_id(str(path)) else str(path)
        names.append(f"{name} ({split})" if split else name)
    return names


def _looks_like_hub_id(value: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", value)) and not Path(value).expanduser().exists()


def _recipe_hub_base(recipe: dict | None) -> str | None:
    """The recipe's base model when it is a Hub id (a local copy or the built-in tiny base has none)."""
    if not recipe or recipe.get("tiny_base"):
        return None
    base = str(recipe.get("base_model") or "")
    return base if _looks_like_hub_id(base) else None


def hub_datasets(recipe: dict | None) -> list[str]:
    """Training sources that are Hub dataset ids (local files have no id to link)."""
    sources = (recipe or {}).get("train_data") or []
    paths = [s.get("path") if isinstance(s, dict) else s for s in sources]
    return [p for p in paths if isinstance(p, str) and _looks_like_hub_id(p)]


def _recipe_rows(recipe: dict | None, summary: dict | None) -> list[tuple[str, str]]:
    if not recipe:
        return []
    shown = {key: f"`{recipe[key]}`" for key in RECIPE_ROWS if recipe.get(key) not in (None, "")}
    if recipe.get("tiny_base"):
        shown["base_model"] = "tiny Gemma built from a config (`tiny_base: true`), random weights"
    if recipe.get("train_head_only"):  # the backbone was frozen whole: its freezing options did not apply
        for key in BACKBONE_KEYS:
            shown.pop(key, None)
    rows = [(key, shown[key]) for key in RECIPE_ROWS if key in shown]
    names = _train_data_names(recipe)
    if names:
        rows.append(("train_data", ", ".join(names)))
    if summary:
        rows += [(label, str(summary[key])) for key, label in (("global_step", "optimizer steps"),
                 ("num_train_rows", "training rows"), ("world_size", "processes")) if summary.get(key) is not None]
        if summary.get("train_runtime_s"):
            rows.append(("training time", f"{summary['train_runtime_s'] / 60:.1f} min"))
    return rows


def _split_citations(text: str) -> list[str]:
    """BibTeX entries of a citation string (losses concatenate theirs)."""
    return [entry.strip() for entry in re.split(r"\n(?=@)", "\n" + text.strip()) if entry.strip().startswith("@")]


def _bibtex_key(entry: str) -> str:
    match = re.match(r"@\w+\{([^,]+),", entry.strip())
    return match.group(1).strip() if match else entry.strip()[:40]


def collect_citations(model: SentenceTransformer, base_model: str | None, datasets_text: str) -> list[str]:
    """The method's citations, from the training loss itself (LeJEPA + MNRL), plus the base model and
    MS MARCO when they were used."""
    from ragcun.losses import LeJEPALoss

    entries = _split_citations(LeJEPALoss(model).citation)
    if base_model and "embeddinggemma" in base_model.lower():
        entries.append(EMBEDDINGGEMMA_CITATION)
    if "msmarco" in datasets_text.lower() or "ms marco" in datasets_text.lower():
        entries.append(MSMARCO_CITATION)
    return entries


@dataclass
class CardOptions:
    """What the card cannot read from the folder: chosen when releasing."""

    repo_id: str
    base_model: str | None = None  # Hub id of the base (a local base path has none)
    license: str | None = None
    language: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    model_name: str | None = None
    eval_dir: str | Path | None = None
    eval_name: str | None = None


def _base_description(base_model: str | None) -> tuple[str, str, str, str]:
    label = f"base ({base_model})" if base_model else "base"
    if base_model and "embeddinggemma" in base_model.lower():
        return label, "768-d, L2-normalized", "cosine", "query / document prompts"
    return label, "as released", "as released (usually cosine)", "as released"


def _metadata(card: ModelCard, options: CardOptions, recipe: dict | None, results: EvaluationResults | None) -> None:
    data = card.data
    if options.license:
        data.license = options.license
    if options.language:
        data.language = options.language
    if options.base_model:
        data.base_model = options.base_model
    datasets = list(dict.fromkeys([*options.datasets, *hub_datasets(recipe)]))
    if datasets:
        data.datasets = datasets
    data.tags = list(dict.fromkeys([*(data.tags or []), *RAGCUN_TAGS]))
    data.library_name, data.pipeline_tag = "sentence-transformers", "sentence-similarity"
    if results is None:
        return
    model_name = options.model_name or options.repo_id.split("/")[-1]
    evals = list(data.eval_results or [])
    for row in results.retrieval:
        if row["model"] != results.model_name:
            continue
        for column, metric_type, metric_name in MODEL_INDEX_METRICS:
            if row.get(column) not in (None, ""):
                evals.append(EvalResult(task_type="retrieval", task_name="Retrieval", dataset_type=row["dataset"],
                                        dataset_name=row["dataset"], dataset_split="test", metric_type=metric_type,
                                        metric_name=metric_name, metric_value=float(row[column])))
    for row in results.mteb:
        if row["model"] == results.model_name.split("/")[-1] and row["main_score"] is not None:
            evals.append(EvalResult(task_type="mteb", task_name=row["task"], dataset_type=row["task"],
                                    dataset_name=row["task"], dataset_split=row["split"],
                                    dataset_config=row["subset"], metric_type="main_score", metric_name="main score",
                                    metric_value=float(row["main_score"])))
    data.eval_results, data.model_name = evals, model_name


def _st_card(model: SentenceTransformer, model_dir: Path, repo_id: str) -> ModelCard:
    """The card sentence-transformers wrote when the model was saved (training logs included), or a fresh one."""
    readme = model_dir / "README.md"
    if readme.is_file():
        card = ModelCard(readme.read_text(encoding="utf-8"))
        if card.data.library_name == "sentence-transformers":
            card.text = card.text.replace(ST_PLACEHOLDER_ID, repo_id)
            return card
    from sentence_transformers.base.model_card import generate_model_card

    model.model_card_data.model_id = repo_id
    model.model_card_data.local_files_only = True
    return ModelCard(generate_model_card(model))


def _insert_sections(st_text: str, title: str, sections: str, citations: list[str]) -> str:
    """Our title, then ragcun's sections before sentence-transformers' "## Model Details"; citations last."""
    body = re.sub(r"\A\s*# [^\n]*\n", f"# {title}\n", st_text, count=1)
    first_h2 = re.search(r"^## ", body, flags=re.MULTILINE)
    cut = first_h2.start() if first_h2 else len(body)
    body = body[:cut].rstrip() + "\n\n" + sections.strip() + "\n\n" + body[cut:].lstrip()
    new = [entry for entry in citations if _bibtex_key(entry) not in body]
    if new:
        block = "\n\n".join(f"```bibtex\n{entry}\n```" for entry in new)
        body = body.rstrip() + "\n\n### Citations of the method (ragcun)\n\n" + block + "\n"
    return body


def render_model_card(model_dir: str | Path, options: CardOptions, model: SentenceTransformer | None = None) -> str:
    """The full README.md of a release: metadata, ragcun's sections, sentence-transformers' card."""
    model_dir = Path(model_dir)
    model = model or SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    recipe, summary = find_run_files(model_dir)
    results = load_evaluation(options.eval_dir, options.eval_name) if options.eval_dir else None
    base_model = options.base_model or _recipe_hub_base(recipe)
    options = CardOptions(**{**options.__dict__, "base_model": base_model})

    card = _st_card(model, model_dir, options.repo_id)
    _metadata(card, options, recipe, results)
    dimension = model.get_embedding_dimension()
    base_label, base_description, base_similarity, base_prompts = _base_description(base_model)
    context = {
        "repo_id": options.repo_id, "base_model": base_model, "dimension": dimension,
        "expected_norm": math.sqrt(dimension), "similarity": model.similarity_fn_name,
        "prompts": {k: v for k, v in model.prompts.items() if v}, "base_label": base_label,
        "base_description": base_description, "base_similarity": base_similarity, "base_prompts": base_prompts,
        "recipe_rows": _recipe_rows(recipe, summary),
        "train_data": ", ".join(_train_data_names(recipe)), "max_seq_length": model.max_seq_length,
        "results": None,
    }
    if results is not None:
        context["results"] = {
            "source": results.source,
            "isotropy_table": markdown_table(results.isotropy, ISOTROPY_COLUMNS, results.model_name),
            "retrieval_table": markdown_table(results.retrieval, RETRIEVAL_COLUMNS, results.model_name),
            "mteb_table": markdown_table(results.mteb, [("model", "model"), ("task", "task"), ("split", "split"),
                                                        ("main_score", "main score")], results.model_name)
            if results.mteb else "",
            "figures": results.figures,
        }
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                     undefined=jinja2.StrictUndefined)
    sections = environment.from_string(card_template_text()).render(**context)
    datasets_text = " ".join([*_train_data_names(recipe), *options.datasets])
    card.text = _insert_sections(card.text, options.model_name or options.repo_id.split("/")[-1], sections,
                                 collect_citations(model, base_model, datasets_text))
    return str(card)
