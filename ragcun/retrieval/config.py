"""``IndexConfig``: every setting of a retriever's index and p-value calibration, validated in one place.

The constructor keywords of ``GaussianRetriever`` build one, ``load`` rebuilds one from the saved manifest, and
``save`` writes it back, so a setting is named, defaulted and checked once. The index type is ``index_type``
throughout the code; only the public keyword (``index=``) and the manifest's JSON keys (``"index": {"type": ...}``)
keep their historical spelling, because users and saved folders depend on them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ragcun.gaussian import CALIBRATIONS, DEFAULT_MIN_DOCUMENTS
from ragcun.retrieval.checks import _check_int, _check_optional_int

IndexType = Literal["flat", "binary", "ivf", "hnsw"]
Backend = Literal["auto", "faiss", "numpy"]
INDEX_TYPES: tuple[str, ...] = ("flat", "binary", "ivf", "hnsw")
BACKENDS: tuple[str, ...] = ("auto", "faiss", "numpy")
RERANK_STORAGES: tuple[str, ...] = ("memory", "disk")

# The null each calibration mode computes, as recorded in the manifest for readers without ragcun.
_NULL_FORMULAS = {
    "corpus": "ncx2.cdf(distance**2 / variance, df=dimension, nc=|query - sum/count|**2 / variance)",
    "global": "chi2.cdf(distance**2 / 2, df=dimension)",
}
# Settings saved under the manifest's "index" object, in the order they are written there. The index type is
# saved as "type"; rerank_storage and storage_dir describe this machine, not the index, and are chosen at load.
_SAVED_INDEX_SETTINGS = ("rerank_factor", "nprobe", "ef_search", "nlist", "ivf_train_min", "hnsw_m", "ef_construction")


def _import_faiss():
    """FAISS if importable, else None (the numpy backend then serves flat and binary indexes)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


@dataclass(frozen=True)
class IndexConfig:
    """The index and calibration settings of one retriever (see ``GaussianRetriever`` for what each does).

    Creating one validates every field and resolves ``backend="auto"`` to ``"faiss"`` or ``"numpy"``, so a
    config that exists is one the stores can be built from. Frozen: change a search-time setting with
    ``dataclasses.replace``, which validates again.
    """

    index_type: IndexType = "flat"
    backend: Backend = "auto"
    # binary: Hamming candidates per requested result, and where the float vectors for the rerank live.
    rerank_factor: int = 10
    rerank_storage: Literal["memory", "disk"] = "memory"
    storage_dir: str | None = None
    # ivf: cells (None: ≈ 4·√N), cells searched (None: nlist/8), vectors held when the cells are trained.
    nlist: int | None = None
    nprobe: int | None = None
    ivf_train_min: int = 10_000
    # hnsw: links per node, build beam, search beam.
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 128
    # p-values: the null ("corpus" or "global") and the fewest documents the corpus null is fitted on.
    calibration: Literal["corpus", "global"] = "corpus"
    calibration_min_documents: int = DEFAULT_MIN_DOCUMENTS

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"Unknown index {self.index_type!r}: choose one of {', '.join(INDEX_TYPES)}.")
        if self.backend not in BACKENDS:
            raise ValueError(f"Unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}.")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(
                f"Unknown calibration {self.calibration!r}: choose 'corpus' (p-values against this corpus's own mean and "
                "spread) or 'global' (against N(0, I))."
            )
        if self.rerank_storage not in RERANK_STORAGES:
            raise ValueError(f"rerank_storage must be 'memory' or 'disk', got {self.rerank_storage!r}.")

        def set_field(name: str, value: Any) -> None:  # frozen: normalised here, once, before anyone reads it
            object.__setattr__(self, name, value)

        for name, minimum in (
            ("rerank_factor", 1),
            ("ivf_train_min", 1),
            ("hnsw_m", 2),
            ("ef_construction", 1),
            ("ef_search", 1),
            ("calibration_min_documents", 2),
        ):
            set_field(name, _check_int(name, getattr(self, name), minimum))
        for name in ("nlist", "nprobe"):
            set_field(name, _check_optional_int(name, getattr(self, name)))
        set_field("backend", self._resolve_backend())

    def _resolve_backend(self) -> str:
        """``"faiss"`` or ``"numpy"``: what ``backend`` asks for, if this index type and this install allow it."""
        faiss = _import_faiss() if self.backend in ("auto", "faiss") else None
        if self.backend == "faiss" and faiss is None:
            raise ImportError(
                "backend='faiss' but faiss is not importable: `pip install faiss-cpu`, or use backend='numpy'."
            )
        resolved = "faiss" if faiss is not None else "numpy"
        if resolved == "numpy" and self.index_type in ("ivf", "hnsw"):
            raise ValueError(
                f"index={self.index_type!r} needs FAISS, which {'is not importable' if self.backend == 'auto' else 'backend=numpy excludes'}. "
                "Install faiss-cpu (`pip install faiss-cpu`), or use index='flat' (exact) or index='binary' with the numpy backend."
            )
        return resolved

    def keywords(self) -> dict[str, Any]:
        """The ``GaussianRetriever`` keyword arguments that rebuild this config (the index type's keyword is ``index``)."""
        return {
            "index" if field.name == "index_type" else field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
        }

    # ------------------------------------------------------------------ the manifest
    def index_manifest(self, state: dict) -> dict[str, Any]:
        """The manifest's ``"index"`` object; ``state`` is what the store saved about itself."""
        return {
            "type": self.index_type,
            "backend": self.backend,
            "state": state,
            **{name: getattr(self, name) for name in _SAVED_INDEX_SETTINGS},
        }

    def calibration_manifest(self, corpus: dict | None) -> dict[str, Any]:
        """The manifest's ``"calibration"`` object; ``corpus`` is the fitted corpus null (None before any document)."""
        return {
            "mode": self.calibration,
            "null": _NULL_FORMULAS[self.calibration],
            "min_documents": self.calibration_min_documents,
            "corpus": corpus,
        }

    @classmethod
    def from_manifest(
        cls,
        manifest: dict,
        *,
        rerank_storage: Literal["memory", "disk"] = "memory",
        storage_dir: str | None = None,
        calibration: Literal["corpus", "global"] | None = None,
    ) -> IndexConfig:
        """The config a manifest recorded. A setting it lacks (older saves) takes its default; an index saved
        before calibration existed gets ``"corpus"``. ``calibration`` overrides the saved mode; the rerank
        storage is chosen at load, not saved."""
        index = manifest["index"]
        saved_calibration = manifest.get("calibration") or {}
        settings = {name: index[name] for name in _SAVED_INDEX_SETTINGS if name in index}
        if "min_documents" in saved_calibration:
            settings["calibration_min_documents"] = saved_calibration["min_documents"]
        return cls(
            index_type=index.get("type"),
            backend=index.get("backend"),
            rerank_storage=rerank_storage,
            storage_dir=storage_dir,
            calibration=calibration if calibration is not None else saved_calibration.get("mode", "corpus"),
            **settings,
        )


def _config_field(name: str, settable: bool = False) -> property:
    """A retriever attribute backed by one field of its ``IndexConfig``. Search-time settings are settable
    (``retriever.ef_search = 512``): the config is replaced, and the new value validated and saved with it."""

    def get(self: Any) -> Any:
        return getattr(self.config, name)

    def set_(self: Any, value: Any) -> None:
        self.config = dataclasses.replace(self.config, **{name: value})

    return property(get, set_ if settable else None, doc=f"The index setting ``{name}`` (see :class:`IndexConfig`).")
