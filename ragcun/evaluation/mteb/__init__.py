"""MTEB evaluation for ragcun models: local BEIR / STS-B folders as MTEB tasks, and the euclidean fix.

- :func:`beir_retrieval_task` / :func:`sts_task` (:mod:`.tasks`): a local BEIR folder or STS Benchmark csv as an
  MTEB task, read from disk, main score nDCG@10 / Spearman of the model's own similarity (negative L2 for a
  euclidean model; for a cosine model the ``cosine_spearman`` MTEB's STSBenchmark reports).
- :func:`mteb_model` / :class:`RagcunEncoderWrapper` (:mod:`.wrapper`): a SentenceTransformer for mteb with its own
  similarity, pairwise too (which mteb's wrapper lacks for euclidean models), under an explicit name and revision.
- :func:`run_mteb` / :class:`ResultsFolder` / :func:`result_path` (:mod:`.run`): ``mteb.evaluate`` with results in
  MTEB's folder layout, returning ``{task name: main score}``.

Inside this package ``import mteb`` is the third-party mteb: imports are absolute.
"""

from ragcun.evaluation.mteb.run import ResultsFolder, result_path, run_mteb
from ragcun.evaluation.mteb.tasks import LocalBEIRRetrieval, LocalSTS, beir_retrieval_task, resolve_tasks, sts_task
from ragcun.evaluation.mteb.wrapper import RagcunEncoderWrapper, mteb_model

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
]
