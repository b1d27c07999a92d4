"""A frozen base as a lookup table: the one key scheme and the one file format of stored base embeddings.

Head-only training (:class:`~ragcun.cached_input.CachedEmbeddings`) and head evaluation
(:class:`~ragcun.encoding.memoized_base.MemoizedBase`) both replace a frozen base by its embeddings of known texts.
Both key a row by :func:`text_key` and store rows and keys in one ``.npz`` (:func:`save_table`, :func:`load_table`),
written at once, so a kill never leaves a table without its keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ragcun.io import atomic_write

TABLE_SUFFIX = ".table.npz"


def text_key(text: str, prompt: str | None = None) -> str:
    """A row's key: the prompt string and the text apart (where the prompt ends is part of the key: a base that pools
    without its prompt tokens embeds ``(prompt, text)`` and ``prompt + text`` differently)."""
    return json.dumps([prompt or "", text])


def prompt_string(model, prompt_name: str | None) -> str | None:
    """The prompt ``model`` prepends for ``prompt_name`` (its default prompt when None), None for no prompt: what a
    row is keyed by, as ``encode(prompt_name=...)`` presents the text."""
    return model.prompts.get(prompt_name or model.default_prompt_name or "") or None


def key_parts(key: str) -> tuple[str, str]:
    """``(prompt, text)`` of a :func:`text_key`."""
    prompt, text = json.loads(key)
    return prompt, text


def save_table(path: Path, table: np.ndarray, keys: Sequence[str]) -> None:
    """Rows and their keys in one ``.npz`` (keys as one UTF-8 JSON byte array: a fixed-width string array would pad
    every key to the longest text), written beside and renamed."""
    if len(keys) != len(table):
        raise ValueError(f"{len(keys)} keys for {len(table)} rows: every row needs exactly one key.")
    keys_json = np.frombuffer(json.dumps(list(keys)).encode("utf-8"), dtype=np.uint8)
    rows = np.ascontiguousarray(table, dtype=np.float32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), lambda tmp: np.savez(tmp, table=rows, keys_json=keys_json))


def load_table(path: Path) -> tuple[np.ndarray, list[str]]:
    """Rows and keys of a :func:`save_table` file (also tables whose keys were a string array, as early memos were)."""
    with np.load(path, allow_pickle=False) as saved:
        table = saved["table"]
        keys = (json.loads(saved["keys_json"].tobytes().decode("utf-8")) if "keys_json" in saved.files
                else [str(key) for key in saved["keys"]])
    if table.ndim != 2 or len(keys) != len(table):
        raise ValueError(f"{path} holds {table.shape} embeddings for {len(keys)} keys: the table is damaged; delete "
                         "it and run again (it is re-encoded).")
    return table, keys
