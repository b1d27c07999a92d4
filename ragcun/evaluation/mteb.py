"""MTEB evaluation for ragcun models: local BEIR / STS-B folders as MTEB tasks, and the euclidean fix.

Public API:

- :func:`beir_retrieval_task` — a local BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) as an
  MTEB retrieval task (``AbsTaskRetrieval`` with its own ``TaskMetadata``, data read from disk in
  ``load_data``, never from the Hub). Its main score is nDCG@10, computed by mteb exactly as for a built-in
  BEIR task (documents are ``title + " " + text``, the same join as mteb's and :mod:`ragcun.evaluation.beir`'s).
- :func:`sts_task` — an STS Benchmark folder (``sts-<split>.csv``) or one such file as an MTEB STS task.
  Main score: ``spearman``, the Spearman correlation of the *model's own* similarity with the 0–5 gold scores.
  For a cosine model that is exactly the ``cosine_spearman`` MTEB's STSBenchmark reports as its main score;
  for a euclidean ragcun model it is the Spearman of negative L2 distances (which ``cosine_spearman`` is not).
- :func:`mteb_model` / :class:`RagcunEncoderWrapper` — a SentenceTransformer adapted for mteb, with an explicit
  model name and revision, and pairwise similarity taken from the model (see "The euclidean fix").
- :func:`run_mteb` — runs ``mteb.evaluate`` and writes MTEB's results layout
  ``<output_folder>/<model name, "/" -> "__">/<revision>/<task>.json`` (+ ``model_meta.json``), returning
  ``{task name: main score}``.
- :class:`ResultsFolder` — mteb's ``ResultCache`` writing straight into a folder, without its ``results/`` level.

The euclidean fix
-----------------
ragcun models are un-normalized and compared by L2 distance (``model.similarity_fn_name == "euclidean"``).
In mteb 2.26, ``mteb.evaluate(SentenceTransformer)`` wraps the model in
``mteb.models.sentence_transformer_wrapper.SentenceTransformerEncoderWrapper``, whose ``ModelMeta``
(``ModelMeta._from_sentence_transformer_model``) has ``similarity_fn_name=ScoringFunction.EUCLIDEAN``. The
wrapper overrides ``similarity`` (it calls ``self.model.similarity``, so retrieval already ranks by negative L2)
but *not* ``similarity_pairwise``. STS (``_evaluators/any_sts_evaluator.py``) and PairClassification
(``_evaluators/pair_classification_evaluator.py``) call ``similarity_functions.compute_pairwise_similarity``,
i.e. ``model.similarity_pairwise``, which falls through to ``AbsEncoder.similarity_pairwise``
(``mteb/models/abs_encoder.py``): with a non-None ``similarity_fn_name`` it only handles COSINE, DOT_PRODUCT and
MAX_SIM and otherwise raises ``ValueError("Similarity function not specified.")`` (``AbsEncoder.similarity`` has
the same gap, hidden for SentenceTransformers by the wrapper's override).

The fix here uses mteb's own extension points, no monkeypatching: :class:`RagcunEncoderWrapper` subclasses
``SentenceTransformerEncoderWrapper`` and adds the missing ``similarity_pairwise`` (the model's own
``similarity_pairwise``, i.e. ``-||a_i - b_i||`` for euclidean; the mirror image of the upstream ``similarity``
override), and replaces the ``ModelMeta`` name/revision with explicit ones. ``mteb.evaluate`` accepts any
object with an ``mteb_model_meta`` as is (``evaluate._sanitize_model``).

Upstream fix (mteb): in ``mteb/models/sentence_transformer_wrapper.py`` give
``SentenceTransformerEncoderWrapper`` a ``similarity_pairwise`` that mirrors its ``similarity`` (call
``self.model.similarity_pairwise`` on the upcast embeddings when the model has one, else
``super().similarity_pairwise``); and in ``mteb/models/abs_encoder.py`` make ``AbsEncoder.similarity`` /
``similarity_pairwise`` handle every ``ScoringFunction`` they can (EUCLIDEAN via
``similarity_functions.euclidean_sim`` / ``pairwise_euclidean_sim``, MANHATTAN likewise) — e.g. by delegating
to ``similarity_functions.select_similarity`` / ``select_pairwise_similarity`` — instead of raising.

Caching: mteb skips a task whose results file already exists for the same model name and revision. Hence
the explicit name (a fine-tuned model must never reuse its base model's results, which it would under mteb's
default name, the base model taken from the model card), and a default revision that fingerprints the
weights, prompts and similarity (``local-<12 hex>``). A local task's dataset revision is a hash of its files,
and :func:`run_mteb` re-runs a task whose saved results came from other data.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import logging
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mteb
import torch
from datasets import Dataset, DatasetDict
from mteb.abstasks import AbsTask
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.cache import ResultCache
from mteb.get_tasks import TASK_LIST
from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
from mteb.similarity_functions import _upcast_low_precision
from sentence_transformers import SentenceTransformer

from ragcun.evaluation.beir import load_beir

logger = logging.getLogger(__name__)

__all__ = [
    "LocalBEIRRetrieval",
    "LocalSTS",
    "RagcunEncoderWrapper",
    "ResultsFolder",
    "beir_retrieval_task",
    "mteb_model",
    "resolve_tasks",
    "result_path",
    "run_mteb",
    "sts_task",
    "weights_fingerprint",
]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]*$")

_METADATA_DEFAULTS: dict[str, Any] = dict(
    category="t2t",
    modalities=["text"],
    reference=None,
    date=None,
    domains=None,
    task_subtypes=[],
    license="not specified",
    annotations_creators=None,
    dialect=[],
    sample_creation="found",
    bibtex_citation="",
)


def _sanitize(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+\-]+", "_", text).strip("._")
    return cleaned or "data"


def _check_task_name(name: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise ValueError(
            f"Task name {name!r} must be a non-empty file-name-safe string (letters, digits, '.', '_', '+', '-'): "
            "it names the results file <task>.json."
        )
    return name


def _hash_files(paths: Iterable[Path]) -> str:
    """The local task's dataset revision: a content hash of its files."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------- tasks
# mteb keeps a task's TaskMetadata on its class (AbsTask.unload_data drops any per-instance copy), so each
# local folder gets its own subclass carrying its metadata and location, instantiated without arguments like
# a built-in task.
class LocalBEIRRetrieval(AbsTaskRetrieval):
    """Base of the tasks :func:`beir_retrieval_task` builds: a BEIR folder on disk, main score nDCG@10."""

    folder: Path
    split: str

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the folder (never the Hub) into mteb's v2 retrieval layout, as mteb's mock tasks do."""
        if self.data_loaded:
            return
        beir = load_beir(self.folder, self.split)
        # mteb joins title and text as (title + " " + text).strip(); load_beir has already joined them the same way.
        corpus = Dataset.from_dict({"id": beir.corpus_ids, "text": beir.corpus_texts})
        queries = Dataset.from_dict({"id": beir.query_ids, "text": beir.query_texts})
        self.dataset = {
            "default": {
                self.split: RetrievalSplitData(
                    corpus=corpus, queries=queries, relevant_docs=beir.qrels, top_ranked=None
                )
            }
        }
        self.data_loaded = True


def _read_sts_csv(path: Path) -> tuple[list[str], list[str], list[float]]:
    """STS Benchmark csv: tab separated genre, file, year, id, score, sentence1, sentence2 [, source1, source2].

    The files are not quoted: a '"' is part of a sentence (csv.QUOTE_NONE), and some rows (answer-answer)
    carry two extra source columns, which are ignored.
    """
    sentence1, sentence2, scores = [], [], []
    with path.open(encoding="utf-8", newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 7:
                raise ValueError(
                    f"{path}:{line_number} has {len(row)} tab-separated fields; an STS Benchmark row needs 7: "
                    "genre, file, year, id, score, sentence1, sentence2."
                )
            try:
                score = float(row[4])
            except ValueError:
                raise ValueError(f"{path}:{line_number}: the score field {row[4]!r} is not a number.") from None
            if not 0.0 <= score <= 5.0:
                raise ValueError(f"{path}:{line_number}: gold score {score} is outside the STS Benchmark range 0-5.")
            sentence1.append(row[5].strip())
            sentence2.append(row[6].strip())
            scores.append(score)
    if len(scores) < 2:
        raise ValueError(f"{path} holds {len(scores)} sentence pairs; a correlation needs at least 2.")
    return sentence1, sentence2, scores


class LocalSTS(AbsTaskSTS):
    """Base of the tasks :func:`sts_task` builds: an STS Benchmark csv on disk (gold 0-5), main score Spearman."""

    min_score = 0
    max_score = 5
    path: Path
    split: str

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the csv (never the Hub) into the {split: Dataset(sentence1, sentence2, score)} layout."""
        if self.data_loaded:
            return
        sentence1, sentence2, scores = _read_sts_csv(self.path)
        self.dataset = DatasetDict(
            {self.split: Dataset.from_dict({"sentence1": sentence1, "sentence2": sentence2, "score": scores})}
        )
        self.data_loaded = True


def _local_task(base: type[AbsTask], metadata: TaskMetadata, **attributes: Any) -> AbsTask:
    class_name = base.__name__ + "_" + re.sub(r"\W", "_", metadata.name)
    cls = type(class_name, (base,), {"metadata": metadata, "__module__": __name__, **attributes})
    return cls()


def beir_retrieval_task(
    folder: str | Path, split: str = "test", name: str | None = None, *, language: str = "eng-Latn"
) -> LocalBEIRRetrieval:
    """A local BEIR folder as an MTEB retrieval task, named ``LocalBEIR-<folder>`` (``-<split>`` unless test).

    The folder is checked now with :func:`ragcun.evaluation.beir.load_beir` (missing files, qrels naming unknown ids,
    empty corpus) and read again in the task's ``load_data``; nothing is fetched from the Hub. The task's
    dataset revision is a hash of corpus.jsonl, queries.jsonl and qrels/<split>.tsv.
    """
    folder = Path(folder).expanduser().resolve()
    beir = load_beir(folder, split)
    if not beir.query_ids:
        raise ValueError(f"{folder / 'qrels' / f'{split}.tsv'} judges no queries: nothing to evaluate.")
    if name is None:
        name = f"LocalBEIR-{_sanitize(folder.name)}" + ("" if split == "test" else f"-{_sanitize(split)}")
    files = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]
    metadata = TaskMetadata(
        name=_check_task_name(name),
        description=f"Local BEIR folder {folder} ({split} split: {len(beir.query_ids)} judged queries, "
        f"{len(beir.corpus_ids)} documents), read from disk by ragcun.",
        dataset={"path": str(folder), "revision": _hash_files(files)},
        type="Retrieval",
        eval_splits=[split],
        eval_langs=[language],
        main_score="ndcg_at_10",
        **_METADATA_DEFAULTS,
    )
    return _local_task(LocalBEIRRetrieval, metadata, folder=folder, split=split)


def sts_task(
    folder_or_csv: str | Path, split: str = "test", name: str | None = None, *, language: str = "eng-Latn"
) -> LocalSTS:
    """An STS Benchmark folder (``sts-<split>.csv``) or csv file as an MTEB STS task, ``LocalSTS-<folder>``.

    Main score ``spearman``: Spearman of the model's own similarity (negative L2 for a euclidean model) with
    the gold scores; for a cosine model it equals the ``cosine_spearman`` MTEB's STSBenchmark reports.
    """
    path = Path(folder_or_csv).expanduser().resolve()
    if path.is_dir():
        path = path / f"sts-{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: pass an STS Benchmark folder holding sts-{split}.csv, or the csv file itself."
        )
    _, _, scores = _read_sts_csv(path)  # validate now, not in the middle of an evaluation
    if name is None:
        name = f"LocalSTS-{_sanitize(path.parent.name)}" + ("" if split == "test" else f"-{_sanitize(split)}")
    metadata = TaskMetadata(
        name=_check_task_name(name),
        description=f"Local STS Benchmark file {path} ({len(scores)} pairs, gold 0-5), read from disk by ragcun.",
        dataset={"path": str(path), "revision": _hash_files([path])},
        type="STS",
        eval_splits=[split],
        eval_langs=[language],
        main_score="spearman",
        **_METADATA_DEFAULTS,
    )
    return _local_task(LocalSTS, metadata, path=path, split=split)


# --------------------------------------------------------------------------------------------- model
def weights_fingerprint(model: SentenceTransformer) -> str:
    """``local-<12 hex>``: a hash of the weights, prompts, similarity and max length (the default revision)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((model.similarity_fn_name, sorted(model.prompts.items()), model.max_seq_length)).encode())
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"local-{digest.hexdigest()[:12]}"


def _check_model_name(name: str) -> str:
    if not isinstance(name, str) or "/" not in name.strip("/") or not re.fullmatch(r"[A-Za-z0-9._+\- /]+", name):
        raise ValueError(
            f"Model name {name!r} must look like 'organization/model_name' (mteb's convention; letters, digits, "
            "'.', '_', '+', '-'), e.g. 'ragcun/embeddinggemma-lejepa-512'. It names the results folder, so give each "
            "fine-tuned model its own."
        )
    if any(part.strip() in {"", ".", ".."} for part in name.split("/")):
        raise ValueError(f"Model name {name!r} must not have empty, '.' or '..' parts.")
    return name


def _check_revision(revision: str) -> str:
    if not isinstance(revision, str) or not _SAFE_NAME.match(revision):
        raise ValueError(
            f"Revision {revision!r} must be a non-empty folder-name-safe string (letters, digits, '.', '_', '+', '-')."
        )
    return revision


class RagcunEncoderWrapper(SentenceTransformerEncoderWrapper):
    """mteb's SentenceTransformer wrapper with the model's own *pairwise* similarity and an explicit name/revision.

    mteb 2.26's wrapper already scores ``similarity`` with the model (negative L2 for ragcun); this adds the
    ``similarity_pairwise`` it lacks, used by STS and PairClassification. Build with :func:`mteb_model`.
    """

    def __init__(
        self,
        model: str | SentenceTransformer,
        revision: str | None = None,
        device: str | None = None,
        model_prompts: dict[str, str] | None = None,
        *,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if name is None and isinstance(model, str):
            name = model  # mteb's ModelMeta.load_model calls loader(name, revision=...)
        if name is None:
            raise ValueError("Pass an explicit model name ('organization/model_name') for the mteb results.")
        _check_model_name(name)
        with warnings.catch_warnings():
            # mteb 2.26's ModelMeta.from_sentence_transformer_model warns about its deprecated arguments on every call.
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__(model, revision=revision, device=device, model_prompts=model_prompts, **kwargs)
        revision = _check_revision(revision if revision is not None else weights_fingerprint(self.model))
        self.mteb_model_meta = self.mteb_model_meta.model_copy(
            update={"name": name, "revision": revision, "loader": type(self)}
        )

    def similarity_pairwise(self, embeddings1, embeddings2):
        """Similarity of row i with row i: the model's own (negative L2 distance for a euclidean model)."""
        pairwise = getattr(self.model, "similarity_pairwise", None)
        if callable(pairwise):
            return pairwise(_upcast_low_precision(embeddings1), _upcast_low_precision(embeddings2))
        return super().similarity_pairwise(embeddings1, embeddings2)


def mteb_model(
    model: SentenceTransformer,
    name: str,
    revision: str | None = None,
    model_prompts: dict[str, str] | None = None,
) -> RagcunEncoderWrapper:
    """``model`` wrapped for mteb: its own similarity (also pairwise), results filed under ``name``/``revision``.

    Args:
        model: a loaded SentenceTransformer (a euclidean ragcun model or any other).
        name: 'organization/model_name' for the results folder; give each fine-tuned model its own.
        revision: results sub-folder; default :func:`weights_fingerprint` (it changes whenever the weights do).
        model_prompts: prompts by task name / task type / 'query' / 'document', overriding the model's own
            (mteb's ``model_prompts``); by default the model's own prompts are used.
    """
    if not isinstance(model, SentenceTransformer):
        raise TypeError(f"mteb_model expects a SentenceTransformer, got {type(model).__name__}.")
    return RagcunEncoderWrapper(model, revision=revision, model_prompts=model_prompts, name=name)


# --------------------------------------------------------------------------------------------- running
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
    path = Path(output_folder).expanduser()
    advice = "Pass a folder you can write to."
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise NotADirectoryError(
            f"MTEB output folder {path} is not a writable directory: it or a parent is a regular file ({error}). "
            f"{advice}"
        ) from error
    except OSError as error:
        raise PermissionError(
            f"MTEB output folder {path} is not a writable directory: cannot create it ({error}). {advice}"
        ) from error
    if not path.is_dir():
        raise NotADirectoryError(f"MTEB output folder {path} is not a writable directory: it is a file. {advice}")
    try:  # os.access is not enough (root, ACLs, read-only mounts): really write a file
        with tempfile.NamedTemporaryFile(dir=path, prefix=".ragcun-write-test-"):
            pass
    except OSError as error:
        raise PermissionError(f"MTEB output folder {path} is not a writable directory ({error}). {advice}") from error
    return path


def resolve_tasks(tasks: Sequence[Any] | Any) -> list[AbsTask]:
    """Task objects as given; names resolved with ``mteb.get_tasks``. Unknown names: ValueError with close matches."""
    if isinstance(tasks, (str, AbsTask)):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ValueError("No tasks given: pass task objects (beir_retrieval_task, sts_task) or MTEB task names.")
    others = [task for task in tasks if not isinstance(task, (str, AbsTask))]
    if others:
        raise TypeError(f"Tasks must be MTEB task objects or task names, got {type(others[0]).__name__}.")
    names = [task for task in tasks if isinstance(task, str)]
    resolved: dict[str, AbsTask] = {}
    if names:
        known = sorted({cls.metadata.name for cls in TASK_LIST})
        known_set, lowered = set(known), {name.lower(): name for name in known}
        problems = []
        for name in dict.fromkeys(names):
            if name in known_set:
                continue
            matches = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
            if name.lower() in lowered and lowered[name.lower()] not in matches:
                matches.insert(0, lowered[name.lower()])
            problems.append(f"{name!r} ({'close matches: ' + ', '.join(matches) if matches else 'no close matches'})")
        if problems:
            raise ValueError(
                f"Unknown MTEB task name(s): {'; '.join(problems)}. See mteb.get_tasks() for all names; "
                "for local data use beir_retrieval_task() or sts_task()."
            )
        resolved = {task.metadata.name: task for task in mteb.get_tasks(tasks=list(dict.fromkeys(names)))}
    out = [resolved[task] if isinstance(task, str) else task for task in tasks]
    seen: set[str] = set()
    for task in out:
        if task.metadata.name in seen:
            raise ValueError(f"Task {task.metadata.name!r} is given twice; its results file would be written twice.")
        seen.add(task.metadata.name)
    return out


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
        revision: default :func:`weights_fingerprint`.
        overwrite: re-run tasks that already have results; otherwise mteb reads them back, except results of a
            local task computed on different data (another file hash), which are re-run.
        encode_kwargs: passed to the model's encode (default ``batch_size=32``).
    """
    resolved = resolve_tasks(tasks)
    folder = _check_output_folder(output_folder)
    _check_model_name(model_name)
    if isinstance(model, RagcunEncoderWrapper):
        new_revision = _check_revision(revision if revision is not None else weights_fingerprint(model.model))
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
