"""Growable and disk-backed float/int arrays behind the index stores: appends in amortised O(1), removals by
mask, and (``_DiskVectors``) rows that stay on disk instead of in RAM."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Any

import numpy as np

# Rows of the corpus per block in the numpy exact search (block x 256 queries x 4 bytes = 64 MB at most), and
# in every other pass over stored vectors, so no pass holds the whole corpus twice.
CORPUS_BLOCK = 65_536


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
            for start in range(0, self._size, CORPUS_BLOCK):
                stop = start + CORPUS_BLOCK
                np.ascontiguousarray(source[start:stop][mask[start:stop]]).tofile(handle)
        self._map = None
        del source
        os.replace(rewritten, self.path)
        self._size = int(mask.sum())

    def close(self) -> None:
        self._map = None
        self._finalizer()

