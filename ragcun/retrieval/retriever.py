"""``GaussianRetriever``: L2 retrieval over N(0, I) embeddings, with calibrated p-values and safe persistence.

ragcun models output un-normalized embeddings that should follow N(0, I_D), so documents are ranked by
Euclidean distance, not cosine. Two consequences shape this module:

- **Calibrated scores.** Every hit carries a p-value: the probability that a document *unrelated* to the query
  would be at least this close. ``max_pvalue=0.01`` keeps only hits closer than chance at the 1% level, a
  threshold that means the same for every query (cosine scores offer no such scale). By default the null is
  the corpus itself (``calibration="corpus"``): its documents as N(μ, σ² I) with the corpus's own mean and
  spread, so ‖q − d‖²/σ² is non-central χ²_D given the query (:mod:`ragcun.gaussian`). One corpus is one
  domain, off-centre and narrower than all text, so the global null (``calibration="global"``: q, d ~ N(0, I),
  ‖q − d‖²/2 ~ χ²_D) would call nearly every in-domain pair "closer than chance".
- **Compressed search.** Sign bits about the corpus mean are balanced, so each carries close to one bit:
  ``index="binary"`` searches packed sign codes by Hamming distance and reranks ``rerank_factor * top_k``
  candidates by exact L2 (``benchmarks/quantization.py`` measures what that keeps of the exact top 10).

Distances are exact ‖q − d‖ in float64 whatever the index (:mod:`ragcun.retrieval.rerank`); the folder
format of ``save`` / ``load`` is described in :mod:`ragcun.retrieval.persistence`; the index settings live in
one :class:`~ragcun.retrieval.config.IndexConfig`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragcun.gaussian import DEFAULT_MIN_DOCUMENTS, CorpusNull, distance_pvalue
from ragcun.retrieval.arrays import CORPUS_BLOCK, _Growable
from ragcun.retrieval.checks import (
    _check_documents,
    _check_ids,
    _check_int,
    _check_max_pvalue,
    _check_metadata,
    _check_optional_int,
    _check_queries,
    _check_top_k,
    _check_vectors,
    _normalize_id,
)
from ragcun.retrieval.config import Backend, IndexConfig, IndexType, _config_field
from ragcun.retrieval.models import encode, load_model, model_manifest, one_model_argument, open_model
from ragcun.retrieval.persistence import (
    _RESAVE_HINT,
    RECORDS_FILE,
    _read_manifest,
    _read_records,
    build_manifest,
    find_saved_folder,
    load_corpus_null,
    verify_files,
    write_saved_folder,
)
from ragcun.retrieval.query_cache import CacheInfo, _QueryCache
from ragcun.retrieval.rerank import nearest
from ragcun.retrieval.stores import check_saved_index, load_store, new_store

__all__ = ["GaussianRetriever", "Hit"]

# add_documents shows a progress bar by default above this many documents.
PROGRESS_BAR_THRESHOLD = 256


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: the document's id (given to ``add_documents``, or an automatic integer).
        document: the document text.
        distance: L2 distance ‖q − d‖ between the query and document embeddings.
        pvalue: probability that an unrelated document would be at least this close, under the null named by
            ``calibration``.
        metadata: the metadata dict given with the document, or None.
        calibration: the null the p-value used: ``"corpus"`` (a document of this corpus, N(μ, σ² I)) or
            ``"global"`` (N(0, I): asked for, or the corpus is too small to fit).
    """

    id: str | int
    document: str
    distance: float
    pvalue: float
    metadata: dict | None = None
    calibration: str = "global"


class GaussianRetriever:
    """Retrieve documents by L2 distance between N(0, I) embeddings, with a χ² p-value for every hit.

    ::

        retriever = GaussianRetriever("output/quickstart/final")   # a local folder or a Hub id
        retriever.add_documents(["...", "..."], ids=["a", "b"], metadata=[{"src": 1}, None])
        for doc, distance in retriever.retrieve("What is machine learning?", top_k=3):
            print(f"[dist={distance:.3f}] {doc}")
        retriever.search("...", top_k=3, max_pvalue=0.01)   # Hit(id, document, distance, pvalue, metadata, calibration)
        retriever.save("my-index"); GaussianRetriever.load("my-index")

    Queries are encoded with the model's ``query`` prompt (``model.encode_query``), documents with its
    ``document`` prompt (``model.encode_document``); a model without those prompts encodes plain text. No
    normalization: distances are between the raw N(0, I) embeddings.

    Indexes (``index=``), with memory per document at D dimensions (ids add 8 bytes each):

    - ``"flat"``: exact search. FAISS ``IndexFlatL2`` (backend ``"faiss"``) or a numpy scan (``"numpy"``),
      same results. 4·D bytes (2 KiB at D = 512); numpy adds 4 bytes of cached norm.
    - ``"binary"``: sign codes, 1 bit per dimension (D/8 bytes: 64 at D = 512, 32x smaller than float32),
      searched by Hamming distance for ``rerank_factor * top_k`` candidates, which are then reranked by
      exact L2 on the float vectors. Those float vectors are kept in RAM by default
      (``rerank_storage="memory"``: D/8 + 4·D bytes, *more* than flat) or in a memory-mapped file
      (``rerank_storage="disk"``: D/8 bytes of RAM; each query reads ``rerank_factor * top_k`` rows from disk
      or the page cache). Works with either backend. Signs are taken about the corpus mean (with
      ``calibration="corpus"``: that of the first batch added, refitted by ``rebuild_index()``).
    - ``"ivf"`` (FAISS only): ``IndexIVFFlat`` with ``nlist`` ≈ 4·√N cells (or ``nlist=``), trained on the
      first add that reaches ``ivf_train_min`` vectors (exact flat search until then); ``nprobe`` cells
      searched (default nlist/8). 4·D + 8 bytes plus ~16 bytes of id map.
    - ``"hnsw"`` (FAISS only): ``IndexHNSWFlat`` with ``hnsw_m`` = 32 links, ``ef_search`` at query time.
      4·D bytes + ~2·M·4 bytes of graph. Removal rebuilds the graph from the remaining vectors.

    For IVF and HNSW the top candidates are reranked by exact distance, as for flat; their recall is below
    1 for large corpora. ``backend="auto"`` uses FAISS when it is importable, else numpy.

    P-values (``calibration=``): ``"corpus"`` (default) judges each hit against the documents of this corpus,
    N(μ, σ² I) with the corpus's mean and average variance, given the query; μ and σ² are exact running sums,
    refreshed by every add and remove, and saved with the index. Below ``calibration_min_documents`` documents
    the global null is used instead, with a warning, and each hit says which null it used. ``"global"`` is
    N(0, I) for query and document: ‖q − d‖²/2 ~ χ²_D. Rankings are the same either way.

    Not thread-safe: use one retriever per thread, or guard it with a lock.
    """

    # The index settings, read from (and, for the settable ones, written through to) ``self.config``.
    index_type = _config_field("index_type")
    backend = _config_field("backend")
    rerank_factor = _config_field("rerank_factor", settable=True)
    nprobe = _config_field("nprobe", settable=True)
    ef_search = _config_field("ef_search", settable=True)
    calibration = _config_field("calibration", settable=True)
    calibration_min_documents = _config_field("calibration_min_documents", settable=True)

    def __init__(
        self,
        model_path: str | None = None,
        *,
        model: Any = None,
        index: IndexType = "flat",
        backend: Backend = "auto",
        rerank_factor: int = 10,
        query_cache_size: int = 1024,
        device: str | None = None,
        dimension: int | None = None,
        rerank_storage: Literal["memory", "disk"] = "memory",
        storage_dir: str | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        ivf_train_min: int = 10_000,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 128,
        calibration: Literal["corpus", "global"] = "corpus",
        calibration_min_documents: int = DEFAULT_MIN_DOCUMENTS,
    ) -> None:
        """
        Args:
            model_path: a local folder or Hub id of a SentenceTransformer, loaded with plain
                ``SentenceTransformer`` (no remote code); also recorded in the saved manifest. A loaded model
                is accepted here too.
            model: an already loaded SentenceTransformer (or any object with ``encode``), or a folder or Hub id
                as model_path; give the model once, in either parameter. With neither, the retriever only takes precomputed embeddings (``add_embeddings`` /
                ``search_embeddings``).
            index: ``"flat"`` (exact), ``"binary"``, ``"ivf"`` or ``"hnsw"`` (see the class docstring).
            backend: ``"auto"`` (FAISS if importable, else numpy), ``"faiss"`` or ``"numpy"``.
            rerank_factor: binary index: Hamming candidates per requested result.
            query_cache_size: query embeddings kept in an LRU cache (0 disables it).
            device: device for loading model_path.
            dimension: embedding dimension when there is no model (otherwise taken from the model or the
                first embeddings added).
            rerank_storage: binary index: keep the float vectors for the rerank in ``"memory"`` or on
                ``"disk"`` (memory-mapped file in ``storage_dir``, a temporary folder by default).
            nlist, nprobe, ivf_train_min: IVF cells (default ≈ 4·√N), cells searched (default nlist/8), and
                the number of vectors at which the cells are trained.
            hnsw_m, ef_construction, ef_search: HNSW links per node, build beam and search beam.
            calibration: the p-values' null: ``"corpus"`` (this corpus's mean and spread) or ``"global"`` (N(0, I)).
            calibration_min_documents: the fewest documents the corpus null is fitted on (global below that).
        """
        self.config = IndexConfig(
            index_type=index, backend=backend, rerank_factor=rerank_factor, rerank_storage=rerank_storage,
            storage_dir=storage_dir, nlist=nlist, nprobe=nprobe, ivf_train_min=ivf_train_min, hnsw_m=hnsw_m,
            ef_construction=ef_construction, ef_search=ef_search, calibration=calibration,
            calibration_min_documents=calibration_min_documents,
        )  # fmt: skip
        query_cache_size = _check_int("query_cache_size", query_cache_size, 0)
        dimension = _check_optional_int("dimension", dimension)
        model, model_path = one_model_argument(model, model_path)
        self.model, self._dim = open_model(model, model_path, device, dimension, self.config.calibration)
        self.model_path = str(model_path) if model_path is not None else None
        self._null: CorpusNull | None = None  # created with the first vectors (the dimension is known then)
        self._warned_small_corpus = False
        self._store: Any = None
        self._internal = _Growable(np.int64)  # ascending internal ids, aligned with the three lists below
        self._ids: list[str | int] = []
        self._documents: list[str] = []
        self._metadata: list[dict | None] = []
        self._by_id: dict[str | int, int] = {}
        self._next_internal = 0
        self._next_auto = 0
        self._cache = _QueryCache(query_cache_size)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._by_id

    @property
    def corpus_null(self) -> CorpusNull | None:
        """The corpus's fitted mean and spread (None before the first document)."""
        return self._null

    def __repr__(self) -> str:
        return (
            f"GaussianRetriever(index={self.index_type!r}, backend={self.backend!r}, calibration={self.calibration!r}, documents={len(self)}, "
            f"dimension={self._dim}, model={self.model_path or (type(self.model).__name__ if self.model is not None else None)!r})"
        )

    def __enter__(self) -> GaussianRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the index (and delete the temporary vector file of ``rerank_storage="disk"``)."""
        if self._store is not None:
            self._store.close()

    @property
    def dimension(self) -> int | None:
        """The embedding dimension (None until known)."""
        return self._dim

    def ids(self) -> list[str | int]:
        """The ids of the stored documents, oldest first (a replaced document counts as new)."""
        return list(self._ids)

    def get(self, doc_id: str | int) -> tuple[str, dict | None]:
        """(document, metadata) of a stored id; KeyError if it is not stored."""
        if doc_id not in self._by_id:
            raise KeyError(f"No document with id {doc_id!r}.")
        position = int(np.searchsorted(self._internal.array, self._by_id[doc_id]))
        return self._documents[position], self._metadata[position]

    def memory_usage(self) -> dict[str, int]:
        """Bytes of RAM held by the index, by part, and ``total`` (document texts, ids and metadata as Python
        objects come on top, the same for every index type)."""
        parts = dict(self._store.memory()) if self._store is not None else {}
        parts["internal_ids"] = self._internal.nbytes
        parts["total"] = sum(parts.values())
        return parts

    # ------------------------------------------------------------------ encoding
    def _require_model(self) -> Any:
        if self.model is None:
            raise ValueError(
                "This retriever has no model, so it cannot encode text. Pass model_path= or model= to "
                "GaussianRetriever (or to GaussianRetriever.load), or use add_embeddings()/search_embeddings()."
            )
        return self.model

    def _encode(self, texts: list[str], kind: Literal["query", "document"], batch_size: int, show_progress_bar: bool) -> np.ndarray:
        return encode(self._require_model(), texts, kind, batch_size, show_progress_bar, self._dim)

    def _query_embeddings(self, queries: list[str]) -> np.ndarray:
        return self._cache.embeddings(
            queries, lambda missing: self._encode(missing, "query", 64, show_progress_bar=len(missing) > PROGRESS_BAR_THRESHOLD)
        )

    @property
    def query_cache_size(self) -> int:
        """Query embeddings kept in the LRU cache (0: none)."""
        return self._cache.maxsize

    @query_cache_size.setter
    def query_cache_size(self, value: int) -> None:
        self._cache.maxsize = value

    def cache_info(self) -> CacheInfo:
        """Query-cache statistics, like ``functools.lru_cache``: hits, misses, maxsize, currsize."""
        return self._cache.info()

    def clear_query_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------ adding and removing
    def add_documents(
        self,
        documents: Sequence[str],
        ids: Sequence[str | int] | None = None,
        metadata: Sequence[dict | None] | None = None,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> list[str | int]:
        """Encode documents with the model's document prompt and add them; returns their ids.

        Args:
            documents: non-empty strings.
            ids: one unique id (string or integer) per document; an id already stored is replaced (document,
                embedding and metadata). Default: integers 0, 1, 2, ... in order of addition (skipping ids in use).
            metadata: one JSON-serializable dict (or None) per document, returned with each hit.
            batch_size: encoding batch size.
            show_progress_bar: default: shown for more than 256 documents.

        Every input is checked before anything is encoded or stored: on any error nothing is added.
        """
        documents = _check_documents(documents)
        ids = _check_ids(ids, len(documents))
        metadata = _check_metadata(metadata, len(documents))
        if not documents:
            return []
        self._require_model()
        if show_progress_bar is None:
            show_progress_bar = len(documents) > PROGRESS_BAR_THRESHOLD
        embeddings = self._encode(documents, "document", batch_size, show_progress_bar)
        return self._commit(embeddings, documents, ids, metadata)

    def add_embeddings(
        self,
        embeddings: Any,
        documents: Sequence[str],
        ids: Sequence[str | int] | None = None,
        metadata: Sequence[dict | None] | None = None,
    ) -> list[str | int]:
        """Add precomputed document embeddings (n, D) with their documents; same rules as ``add_documents``.

        The embeddings should come from the same model and document prompt as the queries will.
        """
        documents = _check_documents(documents)
        ids = _check_ids(ids, len(documents))
        metadata = _check_metadata(metadata, len(documents))
        embeddings = _check_vectors(embeddings, self._dim, "embeddings")
        if len(embeddings) != len(documents):
            raise ValueError(f"Got {len(embeddings)} embeddings for {len(documents)} documents: pass one row per document.")
        if not documents:
            return []
        return self._commit(embeddings, documents, ids, metadata)

    def _commit(self, embeddings: np.ndarray, documents: list[str], ids: list | None, metadata: list) -> list[str | int]:
        if ids is None:
            ids = []
            for _ in documents:
                while self._next_auto in self._by_id:
                    self._next_auto += 1
                ids.append(self._next_auto)
                self._next_auto += 1
        if self._dim is None:
            self._dim = embeddings.shape[1]
        if self._null is None:
            self._null = CorpusNull(self._dim, self.calibration_min_documents)
        if self._store is None:
            first = CorpusNull(self._dim, self.calibration_min_documents)
            first.add(embeddings)
            centre = first.location if self.calibration == "corpus" and first.fitted else None
            self._store = new_store(self.config, self._dim, centre)
        replaced = [self._by_id[value] for value in ids if value in self._by_id]
        internal = np.arange(self._next_internal, self._next_internal + len(ids), dtype=np.int64)
        # Add first, remove the replaced copies after: if adding fails, nothing stored is lost.
        self._store.add(internal, embeddings)
        self._null.add(embeddings)
        self._next_internal += len(ids)
        self._internal.append(internal)
        self._ids.extend(ids)
        self._documents.extend(documents)
        self._metadata.extend(metadata)
        if replaced:
            self._drop(np.asarray(sorted(replaced), dtype=np.int64))
        self._by_id.update(zip(ids, internal.tolist()))
        return list(ids)

    def _drop(self, internal: np.ndarray) -> None:
        for start in range(0, len(internal), CORPUS_BLOCK):
            self._null.remove(self._store.vectors(internal[start : start + CORPUS_BLOCK]))
        self._store.remove(internal)
        keep = np.ones(len(self._internal), dtype=bool)
        keep[np.searchsorted(self._internal.array, internal)] = False
        self._internal.keep(keep)
        self._ids = [value for value, kept in zip(self._ids, keep) if kept]
        self._documents = [value for value, kept in zip(self._documents, keep) if kept]
        self._metadata = [value for value, kept in zip(self._metadata, keep) if kept]

    def remove(self, ids: str | int | Iterable[str | int]) -> int:
        """Remove documents by id; returns how many were removed. Unknown ids raise KeyError (nothing removed)."""
        ids = [ids] if isinstance(ids, (str, int, np.integer)) else list(ids)
        ids = list(dict.fromkeys(_normalize_id(value, i) for i, value in enumerate(ids)))
        unknown = [value for value in ids if value not in self._by_id]
        if unknown:
            raise KeyError(f"Unknown ids {unknown[:10]!r}{' ...' if len(unknown) > 10 else ''}: nothing was removed.")
        if ids:
            self._drop(np.asarray(sorted(self._by_id[value] for value in ids), dtype=np.int64))
            for value in ids:
                del self._by_id[value]
        return len(ids)

    def rebuild_index(self) -> None:
        """Rebuild the index from the stored vectors (e.g. retrain IVF cells after the corpus has grown).

        Also refits the corpus calibration from scratch and, for a binary index, recentres the sign codes on the
        corpus's current mean.
        """
        if self._store is None or not len(self._store):
            return
        ids = self._store.ids.copy()
        vectors = np.concatenate([self._store.vectors(ids[s : s + CORPUS_BLOCK]) for s in range(0, len(ids), CORPUS_BLOCK)])
        self._null = CorpusNull(self._dim, self.calibration_min_documents)
        self._null.add(vectors)
        centre = self._null.location if self.calibration == "corpus" and self._null.fitted else None
        store = new_store(self.config, self._dim, centre)
        store.add(ids, vectors)
        self._store.close()
        self._store = store

    # ------------------------------------------------------------------ searching
    def retrieve(self, query: str, top_k: int = 5, max_pvalue: float | None = None) -> list[tuple[str, float]]:
        """The ``top_k`` nearest documents as (document, L2 distance), nearest first.

        ``max_pvalue`` keeps only hits whose p-value (chance that an unrelated document is at least this close)
        is at most that value, so fewer than top_k may come back. top_k above the corpus size returns them all.
        """
        return [(hit.document, hit.distance) for hit in self.search(query, top_k, max_pvalue)]

    def retrieve_batch(self, queries: Sequence[str], top_k: int = 5, max_pvalue: float | None = None) -> list[list[tuple[str, float]]]:
        """``retrieve`` for many queries at once (encoded in one batch)."""
        return [[(hit.document, hit.distance) for hit in hits] for hits in self.search_batch(queries, top_k, max_pvalue)]

    def search(self, query: str, top_k: int = 5, max_pvalue: float | None = None) -> list[Hit]:
        """Like ``retrieve``, returning :class:`Hit` (id, document, distance, pvalue, metadata)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}; for many queries use search_batch().")
        return self.search_batch([query], top_k, max_pvalue)[0]

    def search_batch(self, queries: Sequence[str], top_k: int = 5, max_pvalue: float | None = None) -> list[list[Hit]]:
        """``search`` for many queries at once."""
        queries = _check_queries(queries)
        top_k, max_pvalue = _check_top_k(top_k), _check_max_pvalue(max_pvalue)
        self._check_not_empty()
        if not queries:
            return []
        return self.search_embeddings(self._query_embeddings(queries), top_k, max_pvalue)

    def _check_not_empty(self) -> None:
        if not len(self):
            raise ValueError("The retriever is empty: add documents with add_documents() (or add_embeddings()) before searching.")

    def search_embeddings(self, query_embeddings: Any, top_k: int = 5, max_pvalue: float | None = None) -> list[list[Hit]]:
        """Search with precomputed query embeddings, shape (D,) or (n, D); returns one list of hits per query."""
        top_k, max_pvalue = _check_top_k(top_k), _check_max_pvalue(max_pvalue)
        self._check_not_empty()
        queries = np.asarray(query_embeddings.detach().cpu().float() if hasattr(query_embeddings, "detach") else query_embeddings)
        queries = _check_vectors(queries.reshape(1, -1) if queries.ndim == 1 else queries, self._dim, "query embeddings")
        ids, distances = nearest(self._store, self.config, queries, min(top_k, len(self)))
        valid = np.isfinite(distances)
        calibration = self._calibration_in_use()
        pvalues = np.full(distances.shape, np.nan)
        if calibration == "corpus":
            pvalues[valid] = self._null.pvalues(distances, queries)[valid]
        else:
            pvalues[valid] = distance_pvalue(distances[valid], self._dim)
        positions = np.searchsorted(self._internal.array, np.where(valid, ids, 0))
        results = []
        for q in range(len(queries)):
            hits = []
            for j in range(ids.shape[1]):
                if not valid[q, j]:
                    break
                if max_pvalue is not None and pvalues[q, j] > max_pvalue:
                    break  # sorted by distance, and the p-value grows with it: no later hit passes either
                p = int(positions[q, j])
                hits.append(Hit(self._ids[p], self._documents[p], float(distances[q, j]), float(pvalues[q, j]),
                                self._metadata[p], calibration))
            results.append(hits)
        return results

    def _calibration_in_use(self) -> str:
        """The null for this search: the corpus's when asked for and it is big enough, else global (warned once)."""
        if self.calibration == "global":
            return "global"
        if self._null is not None and self._null.fitted:
            return "corpus"
        if not self._warned_small_corpus:
            reason = (f"has {len(self)} documents, fewer than calibration_min_documents={self.calibration_min_documents}"
                      if len(self) < self.calibration_min_documents else "has no spread (all its documents are the same vector)")
            warnings.warn(
                f"The corpus {reason} needed to fit its own p-value null: using the global N(0, I) null "
                "(hits say calibration='global'). Add more documents, lower calibration_min_documents, or pass "
                "calibration='global' to choose it.",
                stacklevel=4,
            )
            self._warned_small_corpus = True
        return "global"

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Save to ``directory`` atomically; returns its path.

        Files: ``manifest.json`` (format version, model source/revision/fingerprint, dimension, similarity,
        index type and parameters, count, sha256 of every other file), ``records.jsonl`` (id, document,
        metadata per line), the index (``index.faiss`` via ``faiss.write_index``, ``index.faissbin`` via
        ``faiss.write_index_binary``, or ``.npy`` arrays for the numpy backend) and ``ids.npy``. No pickle.

        Everything is written and fsynced into a temporary folder beside ``directory``; then the old copy
        is renamed aside, the new one renamed into place, and the old one deleted. A crash before the renames
        leaves the previous save untouched; a crash between them leaves it beside the target as
        ``.NAME.old-*``, which ``load`` falls back to. A non-empty folder that is not a retriever save is never
        overwritten.
        """
        records = (self._internal.array, self._ids, self._documents, self._metadata)
        save_store = self._store.save if self._store is not None else (lambda folder: {})
        return write_saved_folder(directory, records, save_store, self._manifest)

    def _manifest(self, state: dict, checksums: dict[str, str]) -> dict:
        return build_manifest(
            count=len(self),
            dimension=self._dim,
            calibration=self.config.calibration_manifest(None if self._null is None else self._null.to_dict()),
            model=model_manifest(self.model, self.model_path),
            index=self.config.index_manifest(state),
            next_internal_id=self._next_internal,
            next_auto_id=self._next_auto,
            files=checksums,
        )

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        model: Any = None,
        model_path: str | None = None,
        allow_model_mismatch: bool = False,
        *,
        device: str | None = None,
        query_cache_size: int = 1024,
        rerank_storage: Literal["memory", "disk"] = "memory",
        storage_dir: str | None = None,
        verify_checksums: bool = True,
        calibration: Literal["corpus", "global"] | None = None,
    ) -> GaussianRetriever:
        """Load a retriever written by :meth:`save`.

        The model is ``model`` (a folder, a Hub id or a loaded model, as in the constructor; ``model_path`` is still
        accepted), else the one recorded in the manifest. It must output
        embeddings of the saved dimension, and its fingerprint (see :func:`ragcun.identity.model_fingerprint`)
        must match the one recorded: a different model would put queries in another space than the stored documents.
        ``allow_model_mismatch=True`` accepts a different model of the same dimension that you know to be
        compatible (e.g. the same weights in another dtype). Every file's sha256 is checked against the
        manifest unless ``verify_checksums=False``. A binary index's rerank vectors are loaded into RAM
        unless ``rerank_storage="disk"`` (then copied into a memory-mapped file in ``storage_dir``).
        ``calibration`` overrides the saved one; an index saved before calibration existed loads with
        ``"corpus"``, fitted from its stored vectors.
        """
        directory = find_saved_folder(directory)
        manifest = _read_manifest(directory)
        verify_files(directory, manifest, verify_checksums)
        check_saved_index(manifest["index"], directory)
        config = IndexConfig.from_manifest(manifest, rerank_storage=rerank_storage, storage_dir=storage_dir, calibration=calibration)
        dim = manifest["dimension"]
        saved_model = manifest["model"]
        model, model_path = one_model_argument(model, model_path)
        model, same_model = load_model(model, model_path, saved_model, dim, allow_model_mismatch, directory, device)
        retriever = cls(model=model, dimension=dim, query_cache_size=query_cache_size, **config.keywords())
        # Where the model can be found again, for the next save: only if it is the recorded model.
        if model_path is not None:
            retriever.model_path = str(model_path)
        elif saved_model is not None and same_model:
            retriever.model_path = saved_model.get("name_or_path")
        internal, ids, documents, metadata = _read_records(directory / RECORDS_FILE)
        if len(ids) != manifest["count"]:
            raise ValueError(f"{directory / RECORDS_FILE} holds {len(ids)} documents, the manifest says {manifest['count']}. {_RESAVE_HINT}")
        if manifest["count"]:
            store = load_store(config, directory, dim, manifest["index"].get("state", {}))
            if not np.array_equal(store.ids, internal):
                store.close()
                raise ValueError(f"The index and {RECORDS_FILE} in {directory} list different documents. {_RESAVE_HINT}")
            retriever._store = store
        saved_corpus = (manifest.get("calibration") or {}).get("corpus")
        retriever._null = load_corpus_null(saved_corpus, dim, config.calibration_min_documents, retriever._store, directory)
        retriever._internal.append(internal)
        retriever._ids, retriever._documents, retriever._metadata = ids, documents, metadata
        retriever._by_id = dict(zip(ids, internal.tolist()))
        retriever._next_internal = int(manifest["next_internal_id"])
        retriever._next_auto = int(manifest["next_auto_id"])
        return retriever
