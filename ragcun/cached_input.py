"""CachedEmbeddings: an input module that looks texts up in a table of embeddings computed once.

Head-only training keeps the backbone frozen, so each training and held-out text has one fixed embedding:
computing it once and training the head on the stored vectors turns an hour-scale CPU job per epoch into
seconds. With this module first in a SentenceTransformer, the trainer, the losses, the evaluator, the
checkpoints and resumption see an ordinary model: ``preprocess`` maps each (prompt, text) to its row,
``forward`` returns that row as the sentence embedding. It exists only while training; the saved model puts
the real backbone in its place (see :mod:`ragcun.training.head`).

This module's path is part of the checkpoint format: a head-only checkpoint's modules.json names
``ragcun.cached_input.CachedEmbeddings``, and resuming finds the class by that name. Keep it here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.modules.input_module import InputModule

from ragcun.encoding.table import load_table, text_key


class CachedEmbeddings(InputModule):
    """Texts → rows of the table at ``table_path`` (see :mod:`ragcun.encoding.table`: rows and their keys in one file).

    Saving writes only the path: a checkpoint of a head-only run refers to the embedding cache, which must stay where
    it is until the run is finished. Checkpoints written before that format name a ``.npy`` matrix and, in
    ``texts_path``, the JSON list of its keys, each the prompt and text joined; those still load.
    """

    config_keys = ["table_path", "texts_path"]
    config_file_name = "cached_embeddings_config.json"

    def __init__(self, table_path: str, texts_path: str | None = None) -> None:
        super().__init__()
        self.table_path, self.texts_path = str(table_path), None if texts_path is None else str(texts_path)
        for path in (self.table_path, self.texts_path):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(
                    f"The embedding cache file {path} is missing: a head-only checkpoint refers to the cache it was "
                    "trained from. Restore it, or start the run again (it re-encodes the texts)."
                )
        if self.texts_path is None:
            table, keys = load_table(Path(self.table_path))
        else:  # the older two-file format: its keys are prompt + text, i.e. the text with an empty prompt
            table = np.load(self.table_path, allow_pickle=False)
            keys = [text_key(joined) for joined in json.loads(Path(self.texts_path).read_text(encoding="utf-8"))]
            if table.ndim != 2 or len(keys) != table.shape[0]:
                raise ValueError(f"{self.table_path} holds {table.shape} embeddings for {len(keys)} texts: the cache "
                                 "is damaged; delete both files and run again.")
        self.index = {key: row for row, key in enumerate(keys)}
        self.register_buffer("table", torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32)), persistent=False)

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Row numbers, as ``input_ids`` (the key the trainer collects features by); -1 for a text that was not
        encoded, refused in ``forward`` (the trainer's model card also preprocesses the raw columns, for their
        lengths, without ever embedding them)."""
        if self.texts_path is None:
            keys = [text_key(text, prompt) for text in inputs]
        else:
            keys = [text_key((prompt or "") + text) for text in inputs]
        return {"input_ids": torch.tensor([self.index.get(key, -1) for key in keys], dtype=torch.long)}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        rows = features["input_ids"].to(self.table.device)
        missing = int((rows < 0).sum())
        if missing:
            raise ValueError(
                f"{missing} of {rows.numel()} texts were not encoded before head-only training. Only the training "
                "and held-out texts, with the prompts they were encoded with, can be looked up; encode other texts "
                "with the saved model."
            )
        features["sentence_embedding"] = self.table[rows]
        return features

    def get_embedding_dimension(self) -> int:
        return int(self.table.shape[1])

    get_sentence_embedding_dimension = get_embedding_dimension

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
