"""Running mteb on a model and filing the results in MTEB's layout.

``<output_folder>/<model name, "/" -> "__">/<revision>/<task>.json`` (+ ``model_meta.json``). mteb skips a task
whose results file already exists for the same model name and revision: hence an explicit name (a fine-tuned
model must never reuse its base model's results) and a default revision that fingerprints the weights, prompts
and similarity (``local-<12 hex>``); a local task whose saved results came from other data is re-run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mteb
from mteb.cache import ResultCache
from sentence_transformers import SentenceTransformer

from ragcun.evaluation.mteb.tasks import resolve_tasks
from ragcun.evaluation.mteb.wrapper import RagcunEncoderWrapper, check_model_name, check_revision, mteb_model
from ragcun.identity import weights_revision
from ragcun.io import ensure_writable_folder

logger = logging.getLogger(__name__)


class ResultsFolder(ResultCache):
    """mteb's ResultCache writing ``<folder>/<model name>/<revision>/<task>.json`` (without its ``results/`` level)."""

    @property
    def has_remote(self) -> bool:  # never mix in a downloaded leaderboard clone
        return False

    def get_task_result_path(
        self, task_name, model_name, model_revision=None, remote=False, experiment_name=None
    ) -> Path:
        path = super().get_task_result_path(
            task_name, model_name, model_revision=model_revision, remote=False, experiment_name=experiment_name
        )
        return self.cache_path / path.relative_to(self.cache_path / "results")


def result_path(output_folder: str | Path, model_name: str, revision: str, task_name: str) -> Path:
    """Where :func:`run_mteb` writes (and mteb reads) one task's results."""
    model_folder = model_name.replace("/", "__").replace(" ", "_")  # as ModelMeta.model_name_as_path
    return Path(output_folder).expanduser() / model_folder / revision / f"{task_name}.json"


def _check_output_folder(output_folder: str | Path) -> Path:
    """Create ``output_folder`` if needed and prove it writable, before any model time is spent."""
    return ensure_writable_folder(output_folder, "MTEB output folder", "Pass a folder you can write to.")


def run_mteb(
    model: SentenceTransformer | RagcunEncoderWrapper,
    tasks: Sequence[Any],
    output_folder: str | Path,
    model_name: str,
    revision: str | None = None,
    overwrite: bool = False,
    *,
    encode_kwargs: Mapping[str, Any] | None = None,
    show_progress_bar: bool = False,
) -> dict[str, float]:
    """Evaluate ``model`` on ``tasks`` with ``mteb.evaluate``; results in MTEB's layout; ``{task name: main score}``.

    Args:
        model: a SentenceTransformer (wrapped with :func:`mteb_model`) or a :class:`RagcunEncoderWrapper`
            (its name and revision are set to ``model_name`` / ``revision``).
        tasks: task objects (:func:`beir_retrieval_task`, :func:`sts_task`, any mteb task) and/or MTEB task
            names (resolved with ``mteb.get_tasks``; running those needs their datasets on the Hub or in the
            Hugging Face cache).
        output_folder: results go to ``<output_folder>/<model_name, '/' -> '__'>/<revision>/<task>.json``
            (see :func:`result_path`), next to mteb's ``model_meta.json`` and ``run_settings.jsonl``.
        model_name: 'organization/model_name'.
        revision: default :func:`weights_revision`.
        overwrite: re-run tasks that already have results; otherwise mteb reads them back, except results of a
            local task computed on different data (another file hash), which are re-run.
        encode_kwargs: passed to the model's encode (default ``batch_size=32``).
    """
    resolved = resolve_tasks(tasks)
    folder = _check_output_folder(output_folder)
    check_model_name(model_name)
    if isinstance(model, RagcunEncoderWrapper):
        new_revision = check_revision(revision if revision is not None else weights_revision(model.model))
        model.mteb_model_meta = model.mteb_model_meta.model_copy(update={"name": model_name, "revision": new_revision})
        wrapped = model
    elif isinstance(model, SentenceTransformer):
        wrapped = mteb_model(model, model_name, revision)
    else:
        raise TypeError(
            f"run_mteb expects a SentenceTransformer or a RagcunEncoderWrapper, got {type(model).__name__}."
        )

    cache = ResultsFolder(folder)
    meta = wrapped.mteb_model_meta
    kwargs = dict(encode_kwargs or {})
    kwargs.setdefault("batch_size", 32)
    kwargs.setdefault("show_progress_bar", show_progress_bar)
    scores: dict[str, float] = {}
    for task in resolved:
        strategy = "always" if overwrite else "only-missing"
        if not overwrite:
            existing = cache.load_task_result(task.metadata.name, meta)
            if existing is not None and existing.dataset_revision != task.metadata.revision:
                logger.warning(
                    "Results for %s under %s were computed on data revision %s, the task now has %s: re-running it.",
                    task.metadata.name, folder, existing.dataset_revision, task.metadata.revision,
                )
                strategy = "always"
        result = mteb.evaluate(
            wrapped,
            task,
            cache=cache,
            overwrite_strategy=strategy,
            encode_kwargs=dict(kwargs),
            show_progress_bar=show_progress_bar,
            co2_tracker=False,
            raise_error=True,
        )
        (task_result,) = result.task_results
        # mteb stores scores rounded to 6 decimals: return them so, whether just computed or read back.
        scores[task.metadata.name] = round(float(task_result.get_score()), 6)
        logger.info(
            "%s: %s = %.5f (%s)", task.metadata.name, task.metadata.main_score, scores[task.metadata.name],
            cache.get_task_result_path(task.metadata.name, meta),
        )
    return scores
