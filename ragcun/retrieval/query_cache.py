"""The retriever's LRU cache of query embeddings: a repeated query (a user paging through results, an
evaluation re-run) skips the model, which costs far more than the search."""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Callable

import numpy as np

CacheInfo = namedtuple("CacheInfo", ["hits", "misses", "maxsize", "currsize"])


class _QueryCache:
    """Embeddings of the ``maxsize`` most recently used queries (0 keeps none). Cached rows are read-only, so a
    caller that modifies a returned array cannot corrupt later results."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def embeddings(self, queries: list[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """One row per query; ``encode`` is called once, on the distinct queries that are not cached."""
        found: dict[str, np.ndarray] = {}
        for query in queries:
            if query in found:
                continue
            cached = self._entries.get(query)
            if cached is not None:
                self._entries.move_to_end(query)
                self.hits += 1
                found[query] = cached
        missing = [query for query in dict.fromkeys(queries) if query not in found]
        if missing:
            self.misses += len(missing)
            encoded = encode(missing)
            for query, embedding in zip(missing, encoded):
                embedding = embedding.copy()
                embedding.setflags(write=False)
                found[query] = embedding
                if self.maxsize:
                    self._entries[query] = embedding
                    while len(self._entries) > self.maxsize:
                        self._entries.popitem(last=False)
        return np.stack([found[query] for query in queries])

    def info(self) -> CacheInfo:
        return CacheInfo(self.hits, self.misses, self.maxsize, len(self._entries))

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0
