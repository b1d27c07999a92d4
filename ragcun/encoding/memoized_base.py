"""Evaluate heads on a frozen base without re-encoding: the base's embedding of each text is computed once.

A head-only model is the base's modules, unchanged, then a small head. Evaluating five such heads on SciFact and
DL19 would encode the same 16k documents five times with the same backbone (an hour each with EmbeddingGemma on a
CPU). Here the backbone is replaced, for evaluation only, by :class:`MemoizedBase`, which asks the real base for a
text's embedding the first time it is seen and looks it up afterwards; the memo is kept on disk (the lookup table
format of :mod:`ragcun.encoding.table`), keyed by the base's fingerprint, its max_seq_length and the precision, so a
later run reuses it, and written every
``save_every`` new texts, so a run killed an hour into a corpus keeps what the base had encoded. The result equals
the full stack's output (same modules, same weights), up to batch padding noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule

from ragcun.encoding.table import load_table, save_table, text_key
from ragcun.identity import cache_key, embedding_identity


class MemoizedBase(InputModule):
    """Stands in for a frozen base: (prompt + text) → the base's embedding, encoded once, then looked up."""

    def __init__(self, base: SentenceTransformer, memo_path: Path | None = None, batch_size: int = 32,
                 save_every: int = 512) -> None:
        super().__init__()
        self.__dict__["base"] = base  # not a submodule: its weights are not part of the head being evaluated
        self.memo_path = memo_path
        self.batch_size = batch_size
        self.save_every = save_every
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.rows: list[np.ndarray] = []
        self.unsaved = 0
        if memo_path is not None and memo_path.is_file():
            table, self.keys = load_table(memo_path)
            self.rows = [table]
            self.index = {key: row for row, key in enumerate(self.keys)}
        self.table = torch.from_numpy(np.concatenate(self.rows)) if self.rows else None

    @property
    def max_seq_length(self) -> int:
        return int(self.base.max_seq_length)

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        texts = list(inputs)
        keys = [text_key(text, prompt) for text in texts]
        missing = list(dict.fromkeys(text for text, key in zip(texts, keys) if key not in self.index))
        if missing:
            embeddings = self.base.encode(missing, prompt=prompt or "", batch_size=self.batch_size,
                                          convert_to_numpy=True, normalize_embeddings=False).astype(np.float32)
            for text in missing:
                key = text_key(text, prompt)
                self.index[key] = len(self.keys)
                self.keys.append(key)
            self.rows.append(embeddings)
            self.unsaved += len(missing)
            self.table = torch.from_numpy(np.concatenate(self.rows))
            self.rows = [self.table.numpy()]
            if self.unsaved >= self.save_every:
                self.save_memo()
        return {"input_ids": torch.tensor([self.index[key] for key in keys], dtype=torch.long)}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features["sentence_embedding"] = self.table[features["input_ids"]]
        return features

    def get_embedding_dimension(self) -> int:
        return int(self.base.get_embedding_dimension())

    get_sentence_embedding_dimension = get_embedding_dimension

    def save_memo(self) -> None:
        """Write the memo beside the embedding cache (atomic: a kill leaves the previous memo)."""
        if self.memo_path is None or not self.unsaved:
            return
        save_table(self.memo_path, self.table.numpy(), self.keys)
        self.unsaved = 0

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        raise TypeError("MemoizedBase exists for evaluation only; save the full model instead.")


def memo_path(base_path: str, base: SentenceTransformer, cache_dir: Path, precision: str,
              revision: str | None = None) -> Path:
    """Where a base's memo lives: keyed by its fingerprint (a Hub id's commit, at ``revision`` when pinned),
    max_seq_length and precision."""
    # the precision is always named, float32 too: memos written before the one key function keep their names
    key = cache_key(embedding_identity(base_path, f"memo|{precision}", "float32", revision), [], None,
                    base.max_seq_length)
    return Path(cache_dir).expanduser() / f"{key}.memo.npz"


def head_of(model: SentenceTransformer, base: SentenceTransformer) -> list[torch.nn.Module] | None:
    """The modules ``model`` adds on top of ``base`` (none for the base itself), or None when ``model`` does not
    start with ``base`` unchanged."""
    if len(model) < len(base):
        return None
    for ours, theirs in zip(model, base):
        if type(ours) is not type(theirs):
            return None
        if hasattr(ours, "get_config_dict") and ours.get_config_dict() != theirs.get_config_dict():
            return None  # e.g. another pooling mode: same (or no) weights, other embeddings
        mine, other = ours.state_dict(), theirs.state_dict()
        if mine.keys() != other.keys() or any(not torch.equal(mine[k].cpu(), other[k].cpu()) for k in mine):
            return None
    return list(model)[len(base):]


def on_memoized_base(model: SentenceTransformer, memo: MemoizedBase, head: list[torch.nn.Module]) -> SentenceTransformer:
    """``model`` with its frozen base replaced by ``memo``: same prompts, similarity and head."""
    stack = SentenceTransformer(modules=[memo, *head], prompts=dict(model.prompts),
                                default_prompt_name=model.default_prompt_name,
                                similarity_fn_name=model.similarity_fn_name, device="cpu")
    return stack
