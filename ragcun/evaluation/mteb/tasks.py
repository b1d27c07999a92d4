"""Local BEIR and STS Benchmark folders as MTEB tasks, and task names resolved against mteb's registry.

A local task reads its data from disk in ``load_data`` (never from the Hub) and is scored by mteb exactly as a
built-in task: nDCG@10 for retrieval (documents are ``title + " " + text``, the same join as mteb's and
:mod:`ragcun.evaluation.beir`'s), Spearman of the model's own similarity for STS. Its dataset revision is a hash of
its files, so results computed on other data are recognised (:func:`ragcun.evaluation.mteb.run.run_mteb`).
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import mteb
from datasets import Dataset, DatasetDict
from mteb.abstasks import AbsTask
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.get_tasks import TASK_LIST

from ragcun.evaluation.beir import load_beir

# A task name, model revision or results sub-folder: safe as one path component.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]*$")

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
    if not isinstance(name, str) or not SAFE_NAME.match(name):
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
