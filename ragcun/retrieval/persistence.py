"""The on-disk format of a saved retriever: what ``save`` writes and ``load`` checks, and nothing else.

A save is one folder: ``manifest.json`` (format version, model identity, dimension, index settings, count and
the sha256 of every other file), ``records.jsonl`` (internal id, id, document, metadata per line), the store's
own files (``index.faiss``, ``index.faissbin`` or ``.npy`` arrays) and ``ids.npy``. No pickle anywhere: FAISS
indexes go through FAISS' own writers, arrays through ``np.save(allow_pickle=False)``, the rest is JSON.

The folder is written beside the target and swapped in by :func:`ragcun.io.write_folder_atomically`; a save
that died between its two renames leaves the previous copy as ``.NAME.old-*``, which :func:`find_saved_folder`
falls back to.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragcun.gaussian import CorpusNull
from ragcun.io import previous_copies, write_folder_atomically
from ragcun.retrieval.arrays import CORPUS_BLOCK
from ragcun.retrieval.config import _import_faiss

FORMAT_NAME = "ragcun.GaussianRetriever"
# 2: the corpus calibration and the binary codes' centre. A version-1 reader would ignore the centre and search
# centred codes with uncentred queries, so it must refuse these saves; this version still reads version 1.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"
RECORDS_FILE = "records.jsonl"

_RESAVE_HINT = "Restore the folder from a backup, or rebuild the retriever (add the documents again) and save it again."


# ----------------------------------------------------------------------------------------------------------
# Files of a store: present, readable and of the shape the manifest promises


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



# ----------------------------------------------------------------------------------------------------------
# Checksums, the records file and the manifest


def _sha256(path: Path, fsync: bool = False) -> str:
    """The file's sha256; ``fsync``: also flush it to disk (a save checksums each file as it makes it durable)."""
    digest = hashlib.sha256()
    with open(path, "rb+" if fsync else "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
        if fsync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


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
    candidates = [p for p in previous_copies(directory) if (p / MANIFEST_FILE).is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


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


# ----------------------------------------------------------------------------------------------------------
# Saving and loading a folder


def build_manifest(
    *, count: int, dimension: int | None, calibration: dict, model: dict | None, index: dict,
    next_internal_id: int, next_auto_id: int, files: dict[str, str],
) -> dict[str, Any]:
    """The whole ``manifest.json``, keys in their on-disk order (``calibration`` and ``index`` come from
    ``IndexConfig``, ``model`` from :func:`ragcun.retrieval.models.model_manifest`)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "count": count,
        "dimension": dimension,
        "similarity": "euclidean",
        "score": "L2 distance; pvalue: see calibration",
        "calibration": calibration,
        "model": model,
        "index": index,
        "next_internal_id": next_internal_id,
        "next_auto_id": next_auto_id,
        "files": files,
    }


def write_saved_folder(
    directory: str | os.PathLike,
    records: tuple[np.ndarray, list, list, list],
    save_store: Callable[[Path], dict],
    manifest: Callable[[dict, dict[str, str]], dict],
) -> Path:
    """Write a save to ``directory`` atomically and return its absolute path.

    ``records``: (internal ids, ids, documents, metadata); ``save_store(folder)`` writes the index files and
    returns the store's state for the manifest; ``manifest(state, checksums)`` builds the manifest. Every file
    is fsynced and hashed before the manifest is written, then :func:`ragcun.io.write_folder_atomically` swaps
    the folder in. A non-empty folder that is not a retriever save is never overwritten.
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

    def write(staging: Path) -> None:
        _write_records(staging / RECORDS_FILE, *records)
        state = save_store(staging)
        checksums = {path.name: _sha256(path, fsync=True) for path in sorted(staging.iterdir())}
        _write_json(staging / MANIFEST_FILE, manifest(state, checksums))

    return write_folder_atomically(target, write)


def find_saved_folder(directory: str | os.PathLike) -> Path:
    """The folder to load: ``directory``, or the copy a save interrupted between its renames left beside it
    (with a warning); FileNotFoundError if neither exists."""
    directory = Path(directory).expanduser().absolute()
    if not directory.exists():
        interrupted = _interrupted_copy(directory)
        if interrupted is None:
            raise FileNotFoundError(f"No saved retriever at {directory}: the folder does not exist. Check the path.")
        warnings.warn(
            f"{directory} is missing but {interrupted.name} beside it holds the copy from before an interrupted save; "
            "loading that copy. Rename it to restore it.",
            stacklevel=3,
        )
        directory = interrupted
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a folder: pass the folder given to GaussianRetriever.save().")
    return directory


def verify_files(directory: Path, manifest: dict, verify_checksums: bool) -> None:
    """Every file the manifest lists is present (and, with ``verify_checksums``, has the recorded sha256)."""
    files = manifest["files"]
    for name, checksum in files.items():
        _require_file(directory / name)
        if verify_checksums and _sha256(directory / name) != checksum:
            raise ValueError(f"{directory / name} is corrupted: its sha256 does not match the manifest. {_RESAVE_HINT}")
    if RECORDS_FILE not in files:
        raise ValueError(f"{directory / MANIFEST_FILE} lists no {RECORDS_FILE}. {_RESAVE_HINT}")


def load_corpus_null(state: dict | None, dim: int | None, min_documents: int, store: Any, directory: Path) -> CorpusNull | None:
    """The saved corpus sums; an index saved before they existed is fitted from its stored vectors."""
    if dim is None:
        return None
    if state is None:
        null = CorpusNull(dim, min_documents)
        if store is not None:
            ids = store.ids
            for start in range(0, len(ids), CORPUS_BLOCK):
                null.add(store.vectors(ids[start : start + CORPUS_BLOCK]))
        return null
    try:
        null = CorpusNull.from_dict(state, dim, min_documents)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{directory / MANIFEST_FILE} has a corrupted corpus calibration ({error}). {_RESAVE_HINT}") from error
    if null.count != (len(store) if store is not None else 0):
        raise ValueError(
            f"{directory / MANIFEST_FILE} calibrates {null.count} documents but holds {len(store) if store else 0}. {_RESAVE_HINT}"
        )
    return null
