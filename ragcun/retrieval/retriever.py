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

Distances are always reported as ‖q − d‖ recomputed in float64 from the stored float32 vectors, so every
index type and backend reports the same number for the same pair (FAISS' squared, expanded distances are
only used to find the candidates).

Persistence never uses pickle: FAISS indexes are written by FAISS' own writers, arrays by ``np.save`` with
``allow_pickle=False``, documents and metadata as JSONL, and a ``manifest.json`` records the model and the
index. Saving is atomic (written beside the target, then renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid
import warnings
import weakref
from collections import OrderedDict, namedtuple
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragcun.gaussian import CALIBRATIONS, DEFAULT_MIN_DOCUMENTS, CorpusNull, distance_pvalue

__all__ = ["GaussianRetriever", "Hit", "distance_pvalue", "model_fingerprint"]

IndexType = Literal["flat", "binary", "ivf", "hnsw"]
Backend = Literal["auto", "faiss", "numpy"]
INDEX_TYPES: tuple[str, ...] = ("flat", "binary", "ivf", "hnsw")
BACKENDS: tuple[str, ...] = ("auto", "faiss", "numpy")

FORMAT_NAME = "ragcun.GaussianRetriever"
# 2: the corpus calibration and the binary codes' centre. A version-1 reader would ignore the centre and search
# centred codes with uncentred queries, so it must refuse these saves; this version still reads version 1.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"
RECORDS_FILE = "records.jsonl"
FINGERPRINT_METHOD = "sha256 over module types, prompts, embedding dimension and every state_dict tensor (v1)"

# add_documents shows a progress bar by default above this many documents.
PROGRESS_BAR_THRESHOLD = 256
# Queries are searched in blocks of this many, so a huge batch never builds a huge distance matrix.
_QUERY_BLOCK = 256
# Rows of the corpus per block in the numpy exact search (block x 256 queries x 4 bytes = 64 MB at most).
_CORPUS_BLOCK = 65_536
# Elements of float64 scratch per block when recomputing exact distances of candidates (~32 MB).
_REFINE_ELEMENTS = 4_000_000

CacheInfo = namedtuple("CacheInfo", ["hits", "misses", "maxsize", "currsize"])


def _import_faiss():
    """FAISS if importable, else None (the numpy backend then serves flat and binary indexes)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


# ----------------------------------------------------------------------------------------------------------
# Scores


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


# ----------------------------------------------------------------------------------------------------------
# Model identity


def model_fingerprint(model: Any) -> str | None:
    """A hash that identifies a model by what it computes, wherever it was loaded from.

    sha256 over the module class names, the prompts, the embedding dimension and every tensor of the
    ``state_dict`` (name, dtype, shape, bytes). The same weights give the same fingerprint whether the model
    was built in memory, loaded from a folder or from the Hub cache, on any device; any fine-tuning step
    changes it. Hashing reads every weight once (about a second per GB). Returns None for objects that are
    not torch modules (then only the dimension can be checked).
    """
    state_dict = getattr(model, "state_dict", None)
    if state_dict is None:
        return None
    import torch

    digest = hashlib.sha256()
    header = {
        "modules": [type(module).__name__ for module in model] if hasattr(model, "__iter__") else [type(model).__name__],
        "prompts": dict(getattr(model, "prompts", {}) or {}),
        "dimension": _model_dimension(model),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name, tensor in state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return "sha256:" + digest.hexdigest()


def _model_dimension(model: Any) -> int | None:
    for getter in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        method = getattr(model, getter, None)
        if callable(method):
            value = method()
            if value is not None:
                return int(value)
    return None


def _hub_revision(name: str | None) -> str | None:
    """The commit of a Hub model in the local cache (None for local folders or when unknown)."""
    if not name or Path(name).expanduser().exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(name, "modules.json")
    except Exception:  # noqa: BLE001 - a revision is a nice-to-have, never a reason to fail
        return None
    match = re.search(r"snapshots[/\\]([0-9a-f]{40})", path) if isinstance(path, str) else None
    return match.group(1) if match else None


def _model_source(model_path: str | None) -> str | None:
    if model_path is None:
        return None
    local = Path(model_path).expanduser()
    return str(local.resolve()) if local.exists() else str(model_path)


# ----------------------------------------------------------------------------------------------------------
# Vector containers


class _Growable:
    """A numpy array with spare capacity (x1.5), so many small appends cost amortised O(1) per row."""

    def __init__(self, dtype: Any, width: int | None = None, data: np.ndarray | None = None) -> None:
        shape = (0,) if width is None else (0, width)
        self._buffer = np.empty(shape, dtype=dtype) if data is None else np.ascontiguousarray(data, dtype=dtype)
        self._size = len(self._buffer)

    def __len__(self) -> int:
        return self._size

    @property
    def array(self) -> np.ndarray:
        return self._buffer[: self._size]

    @property
    def nbytes(self) -> int:
        return int(self._buffer.nbytes)  # what is held in RAM, spare capacity included

    def append(self, rows: np.ndarray) -> None:
        needed = self._size + len(rows)
        if needed > len(self._buffer):
            capacity = max(needed, int(len(self._buffer) * 1.5), 16)
            grown = np.empty((capacity, *self._buffer.shape[1:]), dtype=self._buffer.dtype)
            grown[: self._size] = self._buffer[: self._size]
            self._buffer = grown
        self._buffer[self._size : needed] = rows
        self._size = needed

    def keep(self, mask: np.ndarray) -> None:
        self._buffer = np.ascontiguousarray(self.array[mask])
        self._size = len(self._buffer)

    def close(self) -> None:
        pass


def _remove_file_and_dir(path: str, directory: str | None) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


class _DiskVectors:
    """Float32 rows in a raw file, read through ``np.memmap``: no RAM held beyond the OS page cache.

    The file lives in ``directory`` (a fresh temporary folder when None, deleted with this object).
    Appends write at the end of the file; removals rewrite it in chunks.
    """

    def __init__(self, width: int, directory: str | None = None) -> None:
        owned = directory is None
        folder = tempfile.mkdtemp(prefix="ragcun-vectors-") if owned else str(Path(directory).expanduser())
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.path = str(Path(folder) / f"vectors-{uuid.uuid4().hex}.f32")
        open(self.path, "wb").close()
        self._width = width
        self._size = 0
        self._map: np.ndarray | None = None
        self._finalizer = weakref.finalize(self, _remove_file_and_dir, self.path, folder if owned else None)

    def __len__(self) -> int:
        return self._size

    @property
    def array(self) -> np.ndarray:
        if self._size == 0:
            return np.empty((0, self._width), dtype=np.float32)
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.float32, mode="r", shape=(self._size, self._width))
        return self._map

    @property
    def nbytes(self) -> int:
        return 0  # resident only as OS page cache, which the kernel may drop at any time

    def append(self, rows: np.ndarray) -> None:
        with open(self.path, "ab") as handle:
            np.ascontiguousarray(rows, dtype=np.float32).tofile(handle)
        self._size += len(rows)
        self._map = None

    def keep(self, mask: np.ndarray) -> None:
        source = self.array
        rewritten = self.path + ".rewrite"
        with open(rewritten, "wb") as handle:
            for start in range(0, self._size, _CORPUS_BLOCK):
                stop = start + _CORPUS_BLOCK
                np.ascontiguousarray(source[start:stop][mask[start:stop]]).tofile(handle)
        self._map = None
        del source
        os.replace(rewritten, self.path)
        self._size = int(mask.sum())

    def close(self) -> None:
        self._map = None
        self._finalizer()


# ----------------------------------------------------------------------------------------------------------
# Index stores: each maps internal int64 ids to vectors and proposes candidates for a query.


class _SortedIds:
    """The internal ids a store holds, in ascending order: ids only grow, so appending keeps them sorted
    and an id's position is found by binary search."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._ids = _Growable(np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        return self._ids.array

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ids, ids)

    def _keep_mask(self, ids: np.ndarray) -> np.ndarray:
        """False at the positions of ``ids``: what ``self._ids.keep`` needs to drop them."""
        keep = np.ones(len(self), dtype=bool)
        keep[self._rows(ids)] = False
        return keep


class _RowStore(_SortedIds):
    """Vectors in rows, kept in ascending internal-id order; the id of row r is ``ids[r]``."""

    kind = ""
    backend = ""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._add_vectors(vectors)
        self._ids.append(ids)

    def remove(self, ids: np.ndarray) -> None:
        keep = self._keep_mask(ids)
        self._remove_rows(np.flatnonzero(~keep), keep)
        self._ids.keep(keep)

    def candidates(self, queries: np.ndarray, k: int, options: dict) -> np.ndarray:
        rows = self._candidate_rows(queries, k, options)
        return np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return self._row_vectors(self._rows(ids))

    def close(self) -> None:
        pass

    # Subclasses implement these.
    def _add_vectors(self, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def _remove_rows(self, rows: np.ndarray, keep: np.ndarray) -> None:
        raise NotImplementedError

    def _candidate_rows(self, queries: np.ndarray, k: int, options: dict) -> np.ndarray:
        raise NotImplementedError

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _numpy_topk_l2(queries: np.ndarray, vectors: np.ndarray, norms: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k nearest vectors to each query (exact), scanning the corpus in blocks."""
    row_parts, score_parts = [], []
    for start in range(0, len(vectors), _CORPUS_BLOCK):
        block = vectors[start : start + _CORPUS_BLOCK]
        # ‖q − x‖² − ‖q‖² = ‖x‖² − 2 q·x: the query norm does not change the order.
        scores = norms[start : start + len(block)][None, :] - 2.0 * (queries @ block.T)
        kk = min(k, len(block))
        part = np.argpartition(scores, kk - 1, axis=1)[:, :kk] if kk < len(block) else np.tile(np.arange(len(block)), (len(queries), 1))
        row_parts.append(part + start)
        score_parts.append(np.take_along_axis(scores, part, axis=1))
    rows, scores = np.concatenate(row_parts, axis=1), np.concatenate(score_parts, axis=1)
    if rows.shape[1] > k:
        best = np.argpartition(scores, k - 1, axis=1)[:, :k]
        rows = np.take_along_axis(rows, best, axis=1)
    return rows


class _NumpyFlat(_RowStore):
    """Exact search in numpy: ‖x‖² − 2 q·x with cached row norms, BLAS matrix products over corpus blocks."""

    kind, backend = "flat", "numpy"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._vectors = _Growable(np.float32, dim)
        self._norms = _Growable(np.float32)

    def _add_vectors(self, vectors: np.ndarray) -> None:
        self._vectors.append(vectors)
        self._norms.append(np.einsum("ij,ij->i", vectors, vectors))

    def _remove_rows(self, rows: np.ndarray, keep: np.ndarray) -> None:
        self._vectors.keep(keep)
        self._norms.keep(keep)

    def _candidate_rows(self, queries: np.ndarray, k: int, options: dict) -> np.ndarray:
        return _numpy_topk_l2(queries, self._vectors.array, self._norms.array, k)

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        return self._vectors.array[rows]

    def memory(self) -> dict[str, int]:
        return {"vectors": self._vectors.nbytes, "norms": self._norms.nbytes, "ids": self._ids.nbytes}

    def save(self, directory: Path) -> dict:
        np.save(directory / "vectors.npy", self._vectors.array, allow_pickle=False)
        np.save(directory / "ids.npy", self.ids, allow_pickle=False)
        return {}

    @classmethod
    def load(cls, directory: Path, dim: int, state: dict, options: dict) -> _NumpyFlat:
        store = cls(dim)
        ids = _load_ids(directory)
        vectors = _load_array(directory / "vectors.npy", (len(ids), dim), np.float32)
        store._vectors = _Growable(np.float32, dim, data=vectors)  # adopt the loaded array: no second copy
        store._norms = _Growable(np.float32, data=np.einsum("ij,ij->i", vectors, vectors))
        store._ids = _Growable(np.int64, data=ids)
        return store


class _FaissFlat(_RowStore):
    """Exact search with FAISS ``IndexFlatL2``; row r of the index is internal id ``ids[r]``."""

    kind, backend = "flat", "faiss"

    def __init__(self, dim: int, index: Any = None) -> None:
        super().__init__(dim)
        self.faiss = _import_faiss()
        self.index = index if index is not None else self.faiss.IndexFlatL2(dim)

    def _xb(self) -> np.ndarray:
        if self.index.ntotal == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        # A view of FAISS' own storage (no copy); taken fresh each time because adds may reallocate it.
        return self.faiss.rev_swig_ptr(self.index.get_xb(), self.index.ntotal * self.dim).reshape(-1, self.dim)

    def _add_vectors(self, vectors: np.ndarray) -> None:
        self.index.add(vectors)

    def _remove_rows(self, rows: np.ndarray, keep: np.ndarray) -> None:
        self.index.remove_ids(rows.astype(np.int64))  # IndexFlat compacts in place, keeping row order

    def _candidate_rows(self, queries: np.ndarray, k: int, options: dict) -> np.ndarray:
        return self.index.search(queries, k)[1]

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        return self._xb()[rows]

    def memory(self) -> dict[str, int]:
        return {"faiss_flat": int(self.index.ntotal) * self.dim * 4, "ids": self._ids.nbytes}

    def save(self, directory: Path) -> dict:
        self.faiss.write_index(self.index, str(directory / "index.faiss"))
        np.save(directory / "ids.npy", self.ids, allow_pickle=False)
        return {}

    @classmethod
    def load(cls, directory: Path, dim: int, state: dict, options: dict) -> _FaissFlat:
        index = _read_faiss_index(directory / "index.faiss", dim)
        store = cls(dim, index)
        ids = _load_ids(directory)
        _check_count(len(ids), index.ntotal, "index.faiss")
        store._ids.append(ids)
        return store


class _Binary(_RowStore):
    """Sign codes (1 bit per dimension, ``np.packbits``) searched by Hamming distance, then exact L2 rerank.

    The float32 vectors for the rerank are kept in RAM (``rerank_storage="memory"``, 4·D bytes per document
    on top of the D/8-byte code) or in a memory-mapped file (``"disk"``, only the code stays in RAM).
    """

    kind = "binary"

    def __init__(self, dim: int, backend: str, rerank_storage: str = "memory", storage_dir: str | None = None,
                 centre: np.ndarray | None = None) -> None:
        super().__init__(dim)
        self.backend = backend
        # Signs are taken about this point (the corpus mean when the codes were first built), so that they are
        # balanced for an off-centre corpus too; None keeps the origin (N(0, I) embeddings, older saves).
        self.centre = None if centre is None else np.asarray(centre, dtype=np.float32)
        self.code_bytes = (dim + 7) // 8  # np.packbits pads the last byte with zero bits, for corpus and query alike
        self.faiss = _import_faiss() if backend == "faiss" else None
        self.index = self.faiss.IndexBinaryFlat(self.code_bytes * 8) if self.faiss else None
        self._codes = None if self.faiss else _Growable(np.uint8, self.code_bytes)
        self.rerank_storage = rerank_storage
        self._vectors = _Growable(np.float32, dim) if rerank_storage == "memory" else _DiskVectors(dim, storage_dir)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return np.packbits((vectors if self.centre is None else vectors - self.centre) > 0, axis=1)

    def _add_vectors(self, vectors: np.ndarray) -> None:
        codes = self.encode(vectors)
        self._vectors.append(vectors)
        if self.faiss:
            self.index.add(codes)
        else:
            self._codes.append(codes)

    def _remove_rows(self, rows: np.ndarray, keep: np.ndarray) -> None:
        if self.faiss:
            self.index.remove_ids(rows.astype(np.int64))
        else:
            self._codes.keep(keep)
        self._vectors.keep(keep)

    def _candidate_rows(self, queries: np.ndarray, k: int, options: dict) -> np.ndarray:
        candidates = min(len(self), k * int(options["rerank_factor"]))
        codes = self.encode(queries)
        if self.faiss:
            return self.index.search(codes, candidates)[1].astype(np.int64)
        corpus = self._codes.array
        if self.code_bytes % 8 == 0:  # popcount over 64-bit words is ~8x fewer operations than over bytes
            corpus, codes = corpus.view(np.uint64), codes.view(np.uint64)
        rows = np.empty((len(queries), candidates), dtype=np.int64)
        order = np.arange(len(corpus), dtype=np.int64)
        for i, code in enumerate(codes):
            hamming = np.bitwise_count(corpus ^ code).sum(axis=1, dtype=np.int64)
            # Ties broken by row, as FAISS' heap does, so both backends pick the same candidates.
            key = hamming * len(corpus) + order
            rows[i] = np.argpartition(key, candidates - 1)[:candidates] if candidates < len(key) else order
        return rows

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._vectors.array[rows])

    def memory(self) -> dict[str, int]:
        codes = int(self.index.ntotal) * self.code_bytes if self.faiss else self._codes.nbytes
        return {"codes": codes, "rerank_vectors_in_ram": self._vectors.nbytes, "ids": self._ids.nbytes}

    def close(self) -> None:
        self._vectors.close()

    def save(self, directory: Path) -> dict:
        if self.faiss:
            self.faiss.write_index_binary(self.index, str(directory / "index.faissbin"))
        else:
            np.save(directory / "codes.npy", self._codes.array, allow_pickle=False)
        np.save(directory / "vectors.npy", self._vectors.array, allow_pickle=False)
        np.save(directory / "ids.npy", self.ids, allow_pickle=False)
        return {"centre": None if self.centre is None else self.centre.tolist()}

    @classmethod
    def load(cls, directory: Path, dim: int, state: dict, options: dict) -> _Binary:
        centre = state.get("centre")
        if centre is not None and len(centre) != dim:
            raise ValueError(f"The binary index in {directory} has a {len(centre)}-d code centre, expected {dim}. {_RESAVE_HINT}")
        store = cls(dim, options["backend"], options["rerank_storage"], options["storage_dir"], centre)
        ids = _load_ids(directory)
        if store.faiss:
            path = directory / "index.faissbin"
            _require_file(path)
            try:
                store.index = store.faiss.read_index_binary(str(path))
            except RuntimeError as error:
                raise ValueError(f"The binary index {path} is corrupted or unreadable ({error}). {_RESAVE_HINT}") from error
            if store.index.d != store.code_bytes * 8:
                raise ValueError(f"The binary index {path} has {store.index.d} bits per code, expected {store.code_bytes * 8}. {_RESAVE_HINT}")
            _check_count(len(ids), store.index.ntotal, "index.faissbin")
        else:
            store._codes.append(_load_array(directory / "codes.npy", (len(ids), store.code_bytes), np.uint8))
        if store.rerank_storage == "memory":
            store._vectors = _Growable(np.float32, dim, data=_load_array(directory / "vectors.npy", (len(ids), dim), np.float32))
        else:  # copied in chunks into this retriever's own vector file, never whole in RAM
            vectors = _load_array(directory / "vectors.npy", (len(ids), dim), np.float32, mmap=True)
            for start in range(0, len(vectors), _CORPUS_BLOCK):
                store._vectors.append(np.asarray(vectors[start : start + _CORPUS_BLOCK]))
            del vectors
        store._ids.append(ids)
        return store


class _FaissHNSW(_RowStore):
    """FAISS ``IndexHNSWFlat`` (M neighbours per node). HNSW cannot delete: ``remove`` rebuilds the graph
    from the remaining vectors (O(N log N), so batch your removals)."""

    kind, backend = "hnsw", "faiss"

    def __init__(self, dim: int, m: int = 32, ef_construction: int = 40, index: Any = None) -> None:
        super().__init__(dim)
        self.faiss = _import_faiss()
        self.m, self.ef_construction = m, ef_construction
        self.index = index if index is not None else self._new_index()

    def _new_index(self) -> Any:
        index = self.faiss.IndexHNSWFlat(self.dim, self.m)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _xb(self) -> np.ndarray:
        if self.index.ntotal == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        storage = self.faiss.downcast_index(self.index.storage)
        return self.faiss.rev_swig_ptr(storage.get_xb(), self.index.ntotal * self.dim).reshape(-1, self.dim)

    def _add_vectors(self, vectors: np.ndarray) -> None:
        self.index.add(vectors)

    def _remove_rows(self, rows: np.ndarray, keep: np.ndarray) -> None:
        kept = np.ascontiguousarray(self._xb()[keep])
        self.index = self._new_index()
        if len(kept):
            self.index.add(kept)

    def _candidate_rows(self, queries: np.ndarray, k: int, options: dict) -> np.ndarray:
        self.index.hnsw.efSearch = max(int(options["ef_search"]), k)
        return self.index.search(queries, k)[1]

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        return self._xb()[rows]

    def memory(self) -> dict[str, int]:
        hnsw = self.index.hnsw
        graph = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
        return {"vectors": int(self.index.ntotal) * self.dim * 4, "graph": int(graph), "ids": self._ids.nbytes}

    def save(self, directory: Path) -> dict:
        self.faiss.write_index(self.index, str(directory / "index.faiss"))
        np.save(directory / "ids.npy", self.ids, allow_pickle=False)
        return {}

    @classmethod
    def load(cls, directory: Path, dim: int, state: dict, options: dict) -> _FaissHNSW:
        index = _read_faiss_index(directory / "index.faiss", dim)
        store = cls(dim, options["hnsw_m"], options["ef_construction"], index)
        ids = _load_ids(directory)
        _check_count(len(ids), index.ntotal, "index.faiss")
        store._ids.append(ids)
        return store


class _FaissIVF(_SortedIds):
    """FAISS ``IndexIVFFlat``: ``nlist`` k-means cells (≈ 4·√N by default), ``nprobe`` of them searched.

    Until ``train_min`` vectors are held it searches them exactly (a flat index); the add that reaches
    ``train_min`` trains the cells on (a sample of) the vectors held and moves them in. Later adds go to
    the trained cells, which are not re-trained: call ``GaussianRetriever.rebuild_index()`` after the corpus
    has grown several-fold. Ids are stored in the index (with a hashtable direct map, so removal and
    reconstruction by id work in place).
    """

    kind, backend = "ivf", "faiss"

    def __init__(self, dim: int, nlist: int | None = None, train_min: int = 10_000) -> None:
        super().__init__(dim)
        self.faiss = _import_faiss()
        self.nlist_option, self.train_min = nlist, train_min
        self.flat: _FaissFlat | None = _FaissFlat(dim)
        self.index: Any = None

    @property
    def trained(self) -> bool:
        return self.index is not None

    @property
    def nlist(self) -> int | None:
        return int(self.index.nlist) if self.trained else None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self.trained:
            self.index.add_with_ids(vectors, ids)
        else:
            self.flat.add(ids, vectors)
            if len(self.flat) >= self.train_min:
                self._train()
        self._ids.append(ids)

    def _train(self) -> None:
        vectors, ids = np.ascontiguousarray(self.flat._xb()), self.flat.ids.copy()
        n = len(vectors)
        nlist = min(n, self.nlist_option or max(1, round(4 * math.sqrt(n))))
        quantizer = self.faiss.IndexFlatL2(self.dim)
        index = self.faiss.IndexIVFFlat(quantizer, self.dim, nlist, self.faiss.METRIC_L2)
        index.cp.min_points_per_centroid = 1  # small cells are fine for us: no stderr warning
        # 64 points per cell are plenty for k-means on isotropic data and bound the training cost.
        sample = min(n, 64 * nlist)
        rows = np.sort(np.random.default_rng(0).choice(n, size=sample, replace=False)) if sample < n else slice(None)
        index.train(np.ascontiguousarray(vectors[rows]))
        index.set_direct_map_type(self.faiss.DirectMap.Hashtable)
        index.add_with_ids(vectors, ids)
        self._quantizer = quantizer  # the IVF index points at it: keep it alive
        self.index, self.flat = index, None

    def remove(self, ids: np.ndarray) -> None:
        if self.trained:
            self.index.remove_ids(ids.astype(np.int64))
        else:
            self.flat.remove(ids)
        self._ids.keep(self._keep_mask(ids))

    def candidates(self, queries: np.ndarray, k: int, options: dict) -> np.ndarray:
        if not self.trained:
            return self.flat.candidates(queries, k, options)
        nprobe = options.get("nprobe") or max(1, math.ceil(self.index.nlist / 8))
        self.index.nprobe = min(int(nprobe), self.index.nlist)
        return self.index.search(queries, k)[1]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        if not self.trained:
            return self.flat.vectors(ids)
        return self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    def memory(self) -> dict[str, int]:
        if not self.trained:
            return {**self.flat.memory(), "ids_sorted": self._ids.nbytes}
        lists = self.index.invlists
        entries = sum(lists.list_size(i) for i in range(self.index.nlist))
        return {
            "inverted_lists": int(entries) * (self.index.code_size + 8),
            "centroids": int(self.index.nlist) * self.dim * 4,
            "direct_map_estimate": int(entries) * 16,  # std::unordered_map<idx_t, idx_t>, ~16 B/entry + buckets
            "ids_sorted": self._ids.nbytes,
        }

    def close(self) -> None:
        pass

    def save(self, directory: Path) -> dict:
        self.faiss.write_index(self.index if self.trained else self.flat.index, str(directory / "index.faiss"))
        np.save(directory / "ids.npy", self.ids, allow_pickle=False)
        return {"trained": self.trained}

    @classmethod
    def load(cls, directory: Path, dim: int, state: dict, options: dict) -> _FaissIVF:
        store = cls(dim, options["nlist"], options["ivf_train_min"])
        index = _read_faiss_index(directory / "index.faiss", dim)
        ids = _load_ids(directory)
        _check_count(len(ids), index.ntotal, "index.faiss")
        if state.get("trained"):
            if not isinstance(index, store.faiss.IndexIVFFlat):
                raise ValueError(f"index.faiss in {directory} is a {type(index).__name__}, expected IndexIVFFlat. {_RESAVE_HINT}")
            store.index, store.flat = index, None
        else:
            store.flat = _FaissFlat(dim, index)
            store.flat._ids.append(ids)
        store._ids.append(ids)
        return store


_RESAVE_HINT = "Restore the folder from a backup, or rebuild the retriever (add the documents again) and save it again."


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"Missing file {path}: the retriever folder is incomplete. {_RESAVE_HINT}")


def _read_faiss_index(path: Path, dim: int) -> Any:
    _require_file(path)
    faiss = _import_faiss()
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise ValueError(f"The FAISS index {path} is corrupted or unreadable ({str(error)[-200:]}). {_RESAVE_HINT}") from error
    if index.d != dim:
        raise ValueError(f"The FAISS index {path} holds {index.d}-d vectors, but the manifest says {dim}. {_RESAVE_HINT}")
    return index


def _load_array(path: Path, shape: tuple[int, ...], dtype: Any, mmap: bool = False) -> np.ndarray:
    _require_file(path)
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path} is corrupted or unreadable ({error}). {_RESAVE_HINT}") from error
    if array.shape != shape or array.dtype != dtype:
        raise ValueError(
            f"{path} holds a {array.dtype} array of shape {array.shape}, expected {np.dtype(dtype)} {shape}. {_RESAVE_HINT}"
        )
    return array


def _load_ids(directory: Path) -> np.ndarray:
    path = directory / "ids.npy"
    _require_file(path)
    try:
        ids = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path} is corrupted or unreadable ({error}). {_RESAVE_HINT}") from error
    if ids.ndim != 1 or ids.dtype != np.int64 or (len(ids) > 1 and not (np.diff(ids) > 0).all()):
        raise ValueError(f"{path} does not hold ascending int64 ids. {_RESAVE_HINT}")
    return ids


def _check_count(expected: int, actual: int, name: str) -> None:
    if expected != actual:
        raise ValueError(f"{name} holds {actual} vectors but ids.npy lists {expected}. {_RESAVE_HINT}")


def _k_best(candidates: np.ndarray, squared: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest distances per row with their ids, ordered by (distance, id); -1/inf where none."""
    valid = candidates >= 0
    order = np.lexsort((np.where(valid, candidates, np.iinfo(np.int64).max), squared), axis=-1)[:, :k]
    return np.take_along_axis(np.where(valid, candidates, -1), order, axis=1), np.take_along_axis(squared, order, axis=1)


_STORE_LOADERS = {
    ("flat", "numpy"): _NumpyFlat.load,
    ("flat", "faiss"): _FaissFlat.load,
    ("binary", "numpy"): _Binary.load,
    ("binary", "faiss"): _Binary.load,
    ("hnsw", "faiss"): _FaissHNSW.load,
    ("ivf", "faiss"): _FaissIVF.load,
}


# ----------------------------------------------------------------------------------------------------------
# Files


def _sha256_and_fsync(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb+") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
        os.fsync(handle.fileno())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. platforms where directories cannot be opened
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _write_records(path: Path, internal_ids: np.ndarray, ids: list, documents: list, metadata: list) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for internal, ext, document, meta in zip(internal_ids.tolist(), ids, documents, metadata):
            handle.write(json.dumps({"internal_id": internal, "id": ext, "document": document, "metadata": meta}, ensure_ascii=False))
            handle.write("\n")


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} has no {MANIFEST_FILE}, so it is not a saved GaussianRetriever (or its save never finished). "
            "Pass the folder given to GaussianRetriever.save()."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is corrupted (not valid JSON: {error}). {_RESAVE_HINT}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a GaussianRetriever manifest (no \"format\": \"{FORMAT_NAME}\"). {_RESAVE_HINT}")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path} has format version {manifest.get('format_version')!r}; this ragcun reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Load it with the ragcun version that wrote it, or rebuild the retriever."
        )
    required = ("count", "dimension", "index", "model", "files", "next_internal_id", "next_auto_id")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise ValueError(f"{path} is corrupted: missing {', '.join(missing)}. {_RESAVE_HINT}")
    return manifest


def _interrupted_copy(directory: Path) -> Path | None:
    """The previous copy left beside ``directory`` by a save that died between its two renames."""
    candidates = [p for p in directory.parent.glob(f".{directory.name}.old-*") if (p / MANIFEST_FILE).is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


# ----------------------------------------------------------------------------------------------------------
# Input checks


def _check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k <= 0:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}. Ask for at least one result, e.g. top_k=5.")
    return int(top_k)


def _check_max_pvalue(max_pvalue: Any) -> float | None:
    if max_pvalue is None:
        return None
    if isinstance(max_pvalue, bool) or not isinstance(max_pvalue, (int, float, np.floating)) or not 0 < max_pvalue <= 1:
        raise ValueError(f"max_pvalue must be a number in (0, 1] (e.g. 0.01) or None, got {max_pvalue!r}.")
    return float(max_pvalue)


def _check_queries(queries: Any) -> list[str]:
    if isinstance(queries, str):
        raise TypeError("queries must be a list of strings; for a single query use retrieve(query) or search(query).")
    queries = list(queries)
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise TypeError(f"Query {i} is a {type(query).__name__}, not a string. Pass query texts.")
        if not query.strip():
            raise ValueError(f"Query {i} is empty. Pass a non-empty query text.")
    return queries


def _check_documents(documents: Any) -> list[str]:
    if isinstance(documents, str):
        raise TypeError("documents must be a list of strings, got a single string: wrap it in a list, e.g. [document].")
    if not isinstance(documents, Iterable):
        raise TypeError(f"documents must be a list of strings, got {type(documents).__name__}.")
    documents = list(documents)
    for i, document in enumerate(documents):
        if not isinstance(document, str):
            raise TypeError(f"Document {i} is a {type(document).__name__}, not a string. Convert it to text first (nothing was added).")
        if not document.strip():
            raise ValueError(f"Document {i} is empty or whitespace. Remove it or give it text (nothing was added).")
    return documents


def _normalize_id(value: Any, position: int) -> str | int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"ids[{position}] is a bool; ids must be strings or integers (nothing was added).")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"ids[{position}] is a {type(value).__name__}; ids must be strings or integers (nothing was added).")


def _check_ids(ids: Any, count: int) -> list[str | int] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a list with one id per document, got a single string: wrap it in a list.")
    ids = [_normalize_id(value, i) for i, value in enumerate(ids)]
    if len(ids) != count:
        raise ValueError(f"Got {len(ids)} ids for {count} documents: pass exactly one id per document (nothing was added).")
    seen: dict[str | int, int] = {}
    for i, value in enumerate(ids):
        if value in seen:
            raise ValueError(
                f"Duplicate id {value!r} at positions {seen[value]} and {i} in one call. Ids must be unique within a call; "
                "to replace a document, add it again in a later call (nothing was added)."
            )
        seen[value] = i
    return ids


def _check_metadata(metadata: Any, count: int) -> list[dict | None]:
    if metadata is None:
        return [None] * count
    if isinstance(metadata, dict):
        raise TypeError("metadata must be a list with one dict (or None) per document, got a single dict: wrap it in a list.")
    metadata = list(metadata)
    if len(metadata) != count:
        raise ValueError(f"Got {len(metadata)} metadata entries for {count} documents: pass one per document (nothing was added).")
    for i, meta in enumerate(metadata):
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f"metadata[{i}] is a {type(meta).__name__}; each entry must be a dict or None (nothing was added).")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata[{i}] is not JSON-serializable ({error}); it could not be saved (nothing was added).") from error
    return metadata


def _check_vectors(vectors: Any, dim: int | None, what: str) -> np.ndarray:
    if hasattr(vectors, "detach") and hasattr(vectors, "cpu"):
        vectors = vectors.detach().cpu().float().numpy()
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} must be a numeric array of shape (n, D): {error}") from error
    if array.ndim != 2:
        raise ValueError(f"{what} must have shape (n, D), got shape {array.shape}.")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{what} have {array.shape[1]} dimensions, but this retriever holds {dim}-dimensional embeddings.")
    if array.shape[1] == 0:
        raise ValueError(f"{what} have 0 dimensions.")
    if not np.isfinite(array).all():
        rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(f"{what} contain NaN or inf (rows {rows[:5].tolist()}); check the model or the input (nothing was added).")
    return np.ascontiguousarray(array)


# ----------------------------------------------------------------------------------------------------------
# The retriever


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
                ``SentenceTransformer`` (no remote code); also recorded in the saved manifest.
            model: an already loaded SentenceTransformer (or any object with ``encode``), instead of model_path.
                With neither, the retriever only takes precomputed embeddings (``add_embeddings`` /
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
        if index not in INDEX_TYPES:
            raise ValueError(f"Unknown index {index!r}: choose one of {', '.join(INDEX_TYPES)}.")
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}.")
        if calibration not in CALIBRATIONS:
            raise ValueError(
                f"Unknown calibration {calibration!r}: choose 'corpus' (p-values against this corpus's own mean and "
                "spread) or 'global' (against N(0, I))."
            )
        if rerank_storage not in ("memory", "disk"):
            raise ValueError(f"rerank_storage must be 'memory' or 'disk', got {rerank_storage!r}.")
        for name, value, minimum in (
            ("rerank_factor", rerank_factor, 1),
            ("query_cache_size", query_cache_size, 0),
            ("ivf_train_min", ivf_train_min, 1),
            ("hnsw_m", hnsw_m, 2),
            ("ef_construction", ef_construction, 1),
            ("ef_search", ef_search, 1),
            ("calibration_min_documents", calibration_min_documents, 2),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
        for name, value in (("nlist", nlist), ("nprobe", nprobe), ("dimension", dimension)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
        faiss = _import_faiss() if backend in ("auto", "faiss") else None
        if backend == "faiss" and faiss is None:
            raise ImportError("backend='faiss' but faiss is not importable: `pip install faiss-cpu`, or use backend='numpy'.")
        self.backend = "faiss" if faiss is not None else "numpy"
        if self.backend == "numpy" and index in ("ivf", "hnsw"):
            raise ValueError(
                f"index={index!r} needs FAISS, which {'is not importable' if backend == 'auto' else 'backend=numpy excludes'}. "
                "Install faiss-cpu (`pip install faiss-cpu`), or use index='flat' (exact) or index='binary' with the numpy backend."
            )
        if model is not None and isinstance(model, (str, os.PathLike)):
            raise TypeError("model= takes a loaded SentenceTransformer; pass a folder or Hub id as model_path= instead.")
        if model is None and model_path is not None:
            from ragcun.model import load_base  # plain SentenceTransformer(path), no remote code

            model = load_base(str(model_path), device=device)
        self.model = model
        self.model_path = str(model_path) if model_path is not None else None
        model_dim = _model_dimension(model) if model is not None else None
        if dimension is not None and model_dim is not None and int(dimension) != model_dim:
            raise ValueError(f"dimension={dimension} but the model outputs {model_dim}-dimensional embeddings.")
        self._dim: int | None = model_dim or (int(dimension) if dimension is not None else None)
        similarity = getattr(model, "similarity_fn_name", None)
        if similarity not in (None, "euclidean") and calibration == "global":
            warnings.warn(
                f"The model's similarity function is {similarity!r}, not 'euclidean': L2 ranking still works, but the "
                "global p-values assume un-normalized N(0, I) embeddings (a ragcun model) and mean little here; "
                "calibration='corpus' fits the null to the corpus instead.",
                stacklevel=2,
            )
        self.calibration = calibration
        self.calibration_min_documents = int(calibration_min_documents)
        self._null: CorpusNull | None = None  # created with the first vectors (the dimension is known then)
        self._warned_small_corpus = False
        self.index_type = index
        self.rerank_factor, self.nprobe, self.ef_search = int(rerank_factor), nprobe, int(ef_search)
        self._options = {
            "nlist": nlist, "ivf_train_min": int(ivf_train_min), "hnsw_m": int(hnsw_m),
            "ef_construction": int(ef_construction), "rerank_storage": rerank_storage, "storage_dir": storage_dir,
        }  # fmt: skip
        self._store: Any = None
        self._internal = _Growable(np.int64)  # ascending internal ids, aligned with the three lists below
        self._ids: list[str | int] = []
        self._documents: list[str] = []
        self._metadata: list[dict | None] = []
        self._by_id: dict[str | int, int] = {}
        self._next_internal = 0
        self._next_auto = 0
        self.query_cache_size = int(query_cache_size)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_hits = self._cache_misses = 0

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
        model = self._require_model()
        kwargs = {"batch_size": batch_size, "show_progress_bar": show_progress_bar, "convert_to_numpy": True, "normalize_embeddings": False}
        encode = getattr(model, f"encode_{kind}", None)
        embeddings = encode(texts, **kwargs) if callable(encode) else model.encode(texts, **kwargs)
        embeddings = _check_vectors(embeddings, self._dim, f"The model's {kind} embeddings")
        if len(embeddings) != len(texts):
            raise ValueError(f"The model returned {len(embeddings)} embeddings for {len(texts)} texts.")
        return embeddings

    def _query_embeddings(self, queries: list[str]) -> np.ndarray:
        found: dict[str, np.ndarray] = {}
        for query in queries:
            if query in found:
                continue
            cached = self._cache.get(query)
            if cached is not None:
                self._cache.move_to_end(query)
                self._cache_hits += 1
                found[query] = cached
        missing = [query for query in dict.fromkeys(queries) if query not in found]
        if missing:
            self._cache_misses += len(missing)
            encoded = self._encode(missing, "query", batch_size=64, show_progress_bar=len(missing) > PROGRESS_BAR_THRESHOLD)
            for query, embedding in zip(missing, encoded):
                embedding = embedding.copy()
                embedding.setflags(write=False)
                found[query] = embedding
                if self.query_cache_size:
                    self._cache[query] = embedding
                    while len(self._cache) > self.query_cache_size:
                        self._cache.popitem(last=False)
        return np.stack([found[query] for query in queries])

    def cache_info(self) -> CacheInfo:
        """Query-cache statistics, like ``functools.lru_cache``: hits, misses, maxsize, currsize."""
        return CacheInfo(self._cache_hits, self._cache_misses, self.query_cache_size, len(self._cache))

    def clear_query_cache(self) -> None:
        self._cache.clear()
        self._cache_hits = self._cache_misses = 0

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

    def _new_store(self, dim: int, centre: np.ndarray | None = None) -> Any:
        options = self._options
        if self.index_type == "flat":
            return _FaissFlat(dim) if self.backend == "faiss" else _NumpyFlat(dim)
        if self.index_type == "binary":
            return _Binary(dim, self.backend, options["rerank_storage"], options["storage_dir"], centre)
        if self.index_type == "hnsw":
            return _FaissHNSW(dim, options["hnsw_m"], options["ef_construction"])
        return _FaissIVF(dim, options["nlist"], options["ivf_train_min"])

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
            self._store = self._new_store(self._dim, centre)
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
        for start in range(0, len(internal), _CORPUS_BLOCK):
            self._null.remove(self._store.vectors(internal[start : start + _CORPUS_BLOCK]))
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
        vectors = np.concatenate([self._store.vectors(ids[s : s + _CORPUS_BLOCK]) for s in range(0, len(ids), _CORPUS_BLOCK)])
        self._null = CorpusNull(self._dim, self.calibration_min_documents)
        self._null.add(vectors)
        centre = self._null.location if self.calibration == "corpus" and self._null.fitted else None
        store = self._new_store(self._dim, centre)
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
        ids, distances = self._nearest(queries, min(top_k, len(self)))
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

    def _nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Internal ids and exact L2 distances of the k best candidates per query, nearest first (-1/inf pad)."""
        options = {"rerank_factor": self.rerank_factor, "nprobe": self.nprobe, "ef_search": self.ef_search}
        all_ids, all_distances = [], []
        for start in range(0, len(queries), _QUERY_BLOCK):
            block = queries[start : start + _QUERY_BLOCK]
            candidates = self._store.candidates(block, k, options)
            ids, distances = self._refine(block, candidates, k)
            all_ids.append(ids)
            all_distances.append(distances)
        return np.concatenate(all_ids), np.concatenate(all_distances)

    def _refine(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest candidates per query by exact ‖q − x‖, computed in float64 from the stored vectors.

        Many candidates (binary rerank) are first cut to k with float32 distances (half the memory traffic);
        the k kept are then measured again in float64 and sorted, ties by internal id, so every index type
        and backend reports the same distances in the same order.
        """
        if candidates.shape[1] > k:
            candidates, _ = _k_best(candidates, self._squared_distances(queries, candidates, np.float32), k)
        ids, squared = _k_best(candidates, self._squared_distances(queries, candidates, np.float64), k)
        return ids, np.sqrt(squared)

    def _squared_distances(self, queries: np.ndarray, candidates: np.ndarray, dtype: Any) -> np.ndarray:
        valid = candidates >= 0
        squared = np.full(candidates.shape, np.inf)
        per_block = max(1, _REFINE_ELEMENTS // max(1, candidates.shape[1] * queries.shape[1]))
        for start in range(0, len(queries), per_block):
            stop = start + per_block
            mask = valid[start:stop]
            vectors = self._store.vectors(candidates[start:stop][mask]).astype(dtype, copy=False)
            difference = vectors - queries[start:stop][np.nonzero(mask)[0]].astype(dtype, copy=False)
            squared[start:stop][mask] = np.einsum("ij,ij->i", difference, difference)
        return squared

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
        target = Path(directory).expanduser().absolute()
        if target.exists():
            if not target.is_dir():
                raise ValueError(f"{target} exists and is not a folder: choose another path.")
            if any(target.iterdir()) and not (target / MANIFEST_FILE).is_file():
                raise ValueError(
                    f"{target} is a non-empty folder that is not a saved GaussianRetriever; refusing to overwrite it. "
                    "Choose a new or empty folder."
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
        temporary.mkdir()
        try:
            _write_records(temporary / RECORDS_FILE, self._internal.array, self._ids, self._documents, self._metadata)
            state = self._store.save(temporary) if self._store is not None else {}
            checksums = {path.name: _sha256_and_fsync(path) for path in sorted(temporary.iterdir())}
            _write_json(temporary / MANIFEST_FILE, self._manifest(state, checksums))
            _fsync_dir(temporary)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
        if target.exists():
            os.replace(target, aside)
        os.replace(temporary, target)
        _fsync_dir(target.parent)
        # The previous copy, and leftovers of saves to this target that crashed earlier.
        for leftover in [aside, *target.parent.glob(f".{target.name}.old-*"), *target.parent.glob(f".{target.name}.tmp-*")]:
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
        return target

    def _manifest(self, state: dict, checksums: dict[str, str]) -> dict:
        model = self.model
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "count": len(self),
            "dimension": self._dim,
            "similarity": "euclidean",
            "score": "L2 distance; pvalue: see calibration",
            "calibration": {
                "mode": self.calibration,
                "null": {
                    "corpus": "ncx2.cdf(distance**2 / variance, df=dimension, nc=|query - sum/count|**2 / variance)",
                    "global": "chi2.cdf(distance**2 / 2, df=dimension)",
                }[self.calibration],
                "min_documents": self.calibration_min_documents,
                "corpus": None if self._null is None else self._null.to_dict(),
            },
            "model": None if model is None else {
                "name_or_path": _model_source(self.model_path),
                "revision": _hub_revision(self.model_path),
                "fingerprint": model_fingerprint(model),
                "fingerprint_method": FINGERPRINT_METHOD,
                "dimension": _model_dimension(model),
                "similarity_fn_name": getattr(model, "similarity_fn_name", None),
                "prompts": dict(getattr(model, "prompts", {}) or {}),
            },
            "index": {
                "type": self.index_type,
                "backend": self.backend,
                "state": state,
                "rerank_factor": self.rerank_factor,
                "nprobe": self.nprobe,
                "ef_search": self.ef_search,
                **{key: value for key, value in self._options.items() if key not in ("rerank_storage", "storage_dir")},
            },
            "next_internal_id": self._next_internal,
            "next_auto_id": self._next_auto,
            "files": checksums,
        }  # fmt: skip

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

        The model is ``model``, else ``model_path``, else the one recorded in the manifest. It must output
        embeddings of the saved dimension, and its fingerprint (see :func:`model_fingerprint`) must match the
        one recorded: a different model would put queries in another space than the stored documents.
        ``allow_model_mismatch=True`` accepts a different model of the same dimension that you know to be
        compatible (e.g. the same weights in another dtype). Every file's sha256 is checked against the
        manifest unless ``verify_checksums=False``. A binary index's rerank vectors are loaded into RAM
        unless ``rerank_storage="disk"`` (then copied into a memory-mapped file in ``storage_dir``).
        ``calibration`` overrides the saved one; an index saved before calibration existed loads with
        ``"corpus"``, fitted from its stored vectors.
        """
        directory = Path(directory).expanduser().absolute()
        if not directory.exists():
            interrupted = _interrupted_copy(directory)
            if interrupted is None:
                raise FileNotFoundError(f"No saved retriever at {directory}: the folder does not exist. Check the path.")
            warnings.warn(
                f"{directory} is missing but {interrupted.name} beside it holds the copy from before an interrupted save; "
                "loading that copy. Rename it to restore it.",
                stacklevel=2,
            )
            directory = interrupted
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} is not a folder: pass the folder given to GaussianRetriever.save().")
        manifest = _read_manifest(directory)
        files = manifest["files"]
        for name, checksum in files.items():
            _require_file(directory / name)
            if verify_checksums and _sha256(directory / name) != checksum:
                raise ValueError(f"{directory / name} is corrupted: its sha256 does not match the manifest. {_RESAVE_HINT}")
        if RECORDS_FILE not in files:
            raise ValueError(f"{directory / MANIFEST_FILE} lists no {RECORDS_FILE}. {_RESAVE_HINT}")
        index_info = manifest["index"]
        kind, backend = index_info.get("type"), index_info.get("backend")
        if (kind, backend) not in _STORE_LOADERS:
            raise ValueError(f"{directory / MANIFEST_FILE} names an unknown index {kind!r} / backend {backend!r}. {_RESAVE_HINT}")
        if backend == "faiss" and _import_faiss() is None:
            raise ImportError(f"{directory} holds a FAISS index, but faiss is not importable: `pip install faiss-cpu`.")
        dim = manifest["dimension"]
        saved_calibration = manifest.get("calibration") or {}
        if calibration is None:
            calibration = saved_calibration.get("mode", "corpus")

        saved_model = manifest["model"]
        source = model_path or (saved_model or {}).get("name_or_path") if model is None else None
        if model is None and source is not None:
            from ragcun.model import load_base

            try:
                model = load_base(str(source), device=device)
            except ValueError as error:
                raise ValueError(
                    f"Could not load the retriever's model {source!r}: {error} Pass model= or model_path= to load()."
                ) from error
        same_model = cls._check_model(model, saved_model, dim, allow_model_mismatch, directory) if model is not None else True

        retriever = cls(
            model=model,
            index=kind,
            backend=backend,
            rerank_factor=index_info.get("rerank_factor", 10),
            query_cache_size=query_cache_size,
            dimension=dim,
            rerank_storage=rerank_storage,
            storage_dir=storage_dir,
            nlist=index_info.get("nlist"),
            nprobe=index_info.get("nprobe"),
            ivf_train_min=index_info.get("ivf_train_min", 10_000),
            hnsw_m=index_info.get("hnsw_m", 32),
            ef_construction=index_info.get("ef_construction", 40),
            ef_search=index_info.get("ef_search", 128),
            calibration=calibration,
            calibration_min_documents=saved_calibration.get("min_documents", DEFAULT_MIN_DOCUMENTS),
        )
        # Where the model can be found again, for the next save: only if it is the recorded model.
        if model_path is not None:
            retriever.model_path = str(model_path)
        elif saved_model is not None and same_model:
            retriever.model_path = saved_model.get("name_or_path")
        internal, ids, documents, metadata = cls._read_records(directory / RECORDS_FILE)
        if len(ids) != manifest["count"]:
            raise ValueError(f"{directory / RECORDS_FILE} holds {len(ids)} documents, the manifest says {manifest['count']}. {_RESAVE_HINT}")
        if manifest["count"]:
            store = _STORE_LOADERS[kind, backend](directory, dim, index_info.get("state", {}), {**retriever._options, "backend": backend})
            if not np.array_equal(store.ids, internal):
                store.close()
                raise ValueError(f"The index and {RECORDS_FILE} in {directory} list different documents. {_RESAVE_HINT}")
            retriever._store = store
        retriever._null = cls._load_null(saved_calibration.get("corpus"), retriever, directory)
        retriever._internal.append(internal)
        retriever._ids, retriever._documents, retriever._metadata = ids, documents, metadata
        retriever._by_id = dict(zip(ids, internal.tolist()))
        retriever._next_internal = int(manifest["next_internal_id"])
        retriever._next_auto = int(manifest["next_auto_id"])
        return retriever

    @staticmethod
    def _load_null(state: dict | None, retriever: GaussianRetriever, directory: Path) -> CorpusNull | None:
        """The saved corpus sums; an index saved before they existed is fitted from its stored vectors."""
        dim, store = retriever._dim, retriever._store
        if dim is None:
            return None
        if state is None:
            null = CorpusNull(dim, retriever.calibration_min_documents)
            if store is not None:
                ids = store.ids
                for start in range(0, len(ids), _CORPUS_BLOCK):
                    null.add(store.vectors(ids[start : start + _CORPUS_BLOCK]))
            return null
        try:
            null = CorpusNull.from_dict(state, dim, retriever.calibration_min_documents)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{directory / MANIFEST_FILE} has a corrupted corpus calibration ({error}). {_RESAVE_HINT}") from error
        if null.count != (len(store) if store is not None else 0):
            raise ValueError(
                f"{directory / MANIFEST_FILE} calibrates {null.count} documents but holds {len(store) if store else 0}. {_RESAVE_HINT}"
            )
        return null

    @staticmethod
    def _check_model(model: Any, saved: dict | None, dim: int | None, allow_mismatch: bool, directory: Path) -> bool:
        """Refuse a model that does not fit the saved index; True if it is the recorded model (or none was recorded)."""
        model_dim = _model_dimension(model)
        if dim is not None and model_dim is not None and model_dim != dim:
            raise ValueError(
                f"The model outputs {model_dim}-dimensional embeddings, but the retriever at {directory} holds {dim}-dimensional "
                "ones: queries and documents would live in different spaces. Load it with the model it was built with "
                f"({(saved or {}).get('name_or_path')!r}), or rebuild the retriever with this model."
            )
        if saved is None or saved.get("fingerprint") is None:
            return True  # built from precomputed embeddings: nothing recorded to compare against
        fingerprint = model_fingerprint(model)
        if fingerprint == saved["fingerprint"]:
            return True
        if not allow_mismatch:
            raise ValueError(
                f"The retriever at {directory} was built with a different model ({saved.get('name_or_path')!r}, fingerprint "
                f"{saved['fingerprint'][:19]}...) than the one given (fingerprint {str(fingerprint)[:19]}...): its document "
                "embeddings would not match the queries. Load it with the original model, rebuild the retriever with this "
                "one, or pass allow_model_mismatch=True if you know this model produces the same embeddings."
            )
        return False

    @staticmethod
    def _read_records(path: Path) -> tuple[np.ndarray, list, list, list]:
        internal, ids, documents, metadata = [], [], [], []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    record = json.loads(line)
                    internal.append(int(record["internal_id"]))
                    ids.append(record["id"])
                    documents.append(record["document"])
                    metadata.append(record["metadata"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                    raise ValueError(f"{path} line {number} is corrupted ({error}). {_RESAVE_HINT}") from error
        return np.asarray(internal, dtype=np.int64), ids, documents, metadata
