"""The index stores behind ``GaussianRetriever``: each maps internal int64 ids to vectors and proposes
candidates for a query, which the retriever then reranks by exact distance.

One class per (index type, backend): numpy flat, FAISS flat, binary sign codes (numpy or FAISS), FAISS HNSW and
FAISS IVF. Each writes its own files into a save folder and reads them back (``save`` / ``load``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.nearest import k_smallest
from ragcun.retrieval.arrays import CORPUS_BLOCK, _DiskVectors, _Growable
from ragcun.retrieval.config import IndexConfig, _import_faiss
from ragcun.retrieval.persistence import (
    _RESAVE_HINT,
    MANIFEST_FILE,
    _check_count,
    _load_array,
    _load_ids,
    _read_faiss_index,
    _require_file,
)


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

    index_type = ""
    backend = ""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._add_vectors(vectors)
        self._ids.append(ids)

    def remove(self, ids: np.ndarray) -> None:
        keep = self._keep_mask(ids)
        self._remove_rows(np.flatnonzero(~keep), keep)
        self._ids.keep(keep)

    def candidates(self, queries: np.ndarray, k: int, config: IndexConfig) -> np.ndarray:
        rows = self._candidate_rows(queries, k, config)
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

    def _candidate_rows(self, queries: np.ndarray, k: int, config: IndexConfig) -> np.ndarray:
        raise NotImplementedError

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _numpy_topk_l2(queries: np.ndarray, vectors: np.ndarray, norms: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k nearest vectors to each query (exact, any order: the caller reranks), scanning the corpus in
    blocks. ‖q − x‖² − ‖q‖² = ‖x‖² − 2 q·x: the query norm does not change the order."""
    blocks = ((start, norms[start : start + CORPUS_BLOCK][None, :] - 2.0 * (queries @ vectors[start : start + CORPUS_BLOCK].T))
              for start in range(0, len(vectors), CORPUS_BLOCK))
    return k_smallest(blocks, k, ordered=False)[0]


class _NumpyFlat(_RowStore):
    """Exact search in numpy: ‖x‖² − 2 q·x with cached row norms, BLAS matrix products over corpus blocks."""

    index_type, backend = "flat", "numpy"

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

    def _candidate_rows(self, queries: np.ndarray, k: int, config: IndexConfig) -> np.ndarray:
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
    def load(cls, directory: Path, dim: int, state: dict, config: IndexConfig) -> _NumpyFlat:
        store = cls(dim)
        ids = _load_ids(directory)
        vectors = _load_array(directory / "vectors.npy", (len(ids), dim), np.float32)
        store._vectors = _Growable(np.float32, dim, data=vectors)  # adopt the loaded array: no second copy
        store._norms = _Growable(np.float32, data=np.einsum("ij,ij->i", vectors, vectors))
        store._ids = _Growable(np.int64, data=ids)
        return store


class _FaissIndexFile:
    """Save and reload for stores that are one FAISS index holding every vector (flat, HNSW): index.faiss + ids."""

    def save(self, directory: Path) -> dict:
        self.faiss.write_index(self.index, str(directory / "index.faiss"))
        np.save(directory / "ids.npy", self.ids, allow_pickle=False)
        return {}

    @staticmethod
    def _with_saved_ids(directory: Path, store: Any) -> Any:
        ids = _load_ids(directory)
        _check_count(len(ids), store.index.ntotal, "index.faiss")
        store._ids.append(ids)
        return store


class _FaissFlat(_FaissIndexFile, _RowStore):
    """Exact search with FAISS ``IndexFlatL2``; row r of the index is internal id ``ids[r]``."""

    index_type, backend = "flat", "faiss"

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

    def _candidate_rows(self, queries: np.ndarray, k: int, config: IndexConfig) -> np.ndarray:
        return self.index.search(queries, k)[1]

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        return self._xb()[rows]

    def memory(self) -> dict[str, int]:
        return {"faiss_flat": int(self.index.ntotal) * self.dim * 4, "ids": self._ids.nbytes}

    @classmethod
    def load(cls, directory: Path, dim: int, state: dict, config: IndexConfig) -> _FaissFlat:
        return cls._with_saved_ids(directory, cls(dim, _read_faiss_index(directory / "index.faiss", dim)))


class _Binary(_RowStore):
    """Sign codes (1 bit per dimension, ``np.packbits``) searched by Hamming distance, then exact L2 rerank.

    The float32 vectors for the rerank are kept in RAM (``rerank_storage="memory"``, 4·D bytes per document
    on top of the D/8-byte code) or in a memory-mapped file (``"disk"``, only the code stays in RAM).
    """

    index_type = "binary"

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

    def _candidate_rows(self, queries: np.ndarray, k: int, config: IndexConfig) -> np.ndarray:
        candidates = min(len(self), k * config.rerank_factor)
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
    def load(cls, directory: Path, dim: int, state: dict, config: IndexConfig) -> _Binary:
        centre = state.get("centre")
        if centre is not None and len(centre) != dim:
            raise ValueError(f"The binary index in {directory} has a {len(centre)}-d code centre, expected {dim}. {_RESAVE_HINT}")
        store = cls(dim, config.backend, config.rerank_storage, config.storage_dir, centre)
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
            for start in range(0, len(vectors), CORPUS_BLOCK):
                store._vectors.append(np.asarray(vectors[start : start + CORPUS_BLOCK]))
            del vectors
        store._ids.append(ids)
        return store


class _FaissHNSW(_FaissIndexFile, _RowStore):
    """FAISS ``IndexHNSWFlat`` (M neighbours per node). HNSW cannot delete: ``remove`` rebuilds the graph
    from the remaining vectors (O(N log N), so batch your removals)."""

    index_type, backend = "hnsw", "faiss"

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

    def _candidate_rows(self, queries: np.ndarray, k: int, config: IndexConfig) -> np.ndarray:
        self.index.hnsw.efSearch = max(config.ef_search, k)
        return self.index.search(queries, k)[1]

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        return self._xb()[rows]

    def memory(self) -> dict[str, int]:
        hnsw = self.index.hnsw
        graph = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
        return {"vectors": int(self.index.ntotal) * self.dim * 4, "graph": int(graph), "ids": self._ids.nbytes}

    @classmethod
    def load(cls, directory: Path, dim: int, state: dict, config: IndexConfig) -> _FaissHNSW:
        index = _read_faiss_index(directory / "index.faiss", dim)
        return cls._with_saved_ids(directory, cls(dim, config.hnsw_m, config.ef_construction, index))


class _FaissIVF(_SortedIds):
    """FAISS ``IndexIVFFlat``: ``nlist`` k-means cells (≈ 4·√N by default), ``nprobe`` of them searched.

    Until ``train_min`` vectors are held it searches them exactly (a flat index); the add that reaches
    ``train_min`` trains the cells on (a sample of) the vectors held and moves them in. Later adds go to
    the trained cells, which are not re-trained: call ``GaussianRetriever.rebuild_index()`` after the corpus
    has grown several-fold. Ids are stored in the index (with a hashtable direct map, so removal and
    reconstruction by id work in place).
    """

    index_type, backend = "ivf", "faiss"

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

    def candidates(self, queries: np.ndarray, k: int, config: IndexConfig) -> np.ndarray:
        if not self.trained:
            return self.flat.candidates(queries, k, config)
        nprobe = config.nprobe or max(1, math.ceil(self.index.nlist / 8))
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
    def load(cls, directory: Path, dim: int, state: dict, config: IndexConfig) -> _FaissIVF:
        store = cls(dim, config.nlist, config.ivf_train_min)
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


_STORE_LOADERS = {
    ("flat", "numpy"): _NumpyFlat.load,
    ("flat", "faiss"): _FaissFlat.load,
    ("binary", "numpy"): _Binary.load,
    ("binary", "faiss"): _Binary.load,
    ("hnsw", "faiss"): _FaissHNSW.load,
    ("ivf", "faiss"): _FaissIVF.load,
}


def new_store(config: IndexConfig, dim: int, centre: np.ndarray | None = None) -> Any:
    """An empty store for ``config``; ``centre``: where a binary index takes its signs (None: the origin)."""
    if config.index_type == "flat":
        return _FaissFlat(dim) if config.backend == "faiss" else _NumpyFlat(dim)
    if config.index_type == "binary":
        return _Binary(dim, config.backend, config.rerank_storage, config.storage_dir, centre)
    if config.index_type == "hnsw":
        return _FaissHNSW(dim, config.hnsw_m, config.ef_construction)
    return _FaissIVF(dim, config.nlist, config.ivf_train_min)


def check_saved_index(index: dict, directory: Path) -> None:
    """Refuse, before anything is loaded, a manifest's ``"index"`` that no store reads or that needs FAISS here."""
    index_type, backend = index.get("type"), index.get("backend")
    if (index_type, backend) not in _STORE_LOADERS:
        raise ValueError(f"{directory / MANIFEST_FILE} names an unknown index {index_type!r} / backend {backend!r}. {_RESAVE_HINT}")
    if backend == "faiss" and _import_faiss() is None:
        raise ImportError(f"{directory} holds a FAISS index, but faiss is not importable: `pip install faiss-cpu`.")


def load_store(config: IndexConfig, directory: Path, dim: int, state: dict) -> Any:
    """The store saved in ``directory``; ``state`` is what its ``save`` returned (from the manifest)."""
    return _STORE_LOADERS[config.index_type, config.backend](directory, dim, state, config)
