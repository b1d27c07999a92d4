"""CachedEmbeddings: an input module that looks texts up in a table of embeddings computed once.

Head-only training keeps the backbone frozen, so each training and held-out text has one fixed embedding:
computing it once and training the head on the stored vectors turns an hour-scale CPU job per epoch into
seconds. With this module first in a SentenceTransformer, the trainer, the losses, the evaluator, the
checkpoints and resumption see an ordinary model: ``preprocess`` maps each (prompt-prefixed) text to its row,
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


class CachedEmbeddings(InputModule):
    """Texts → rows of ``table_path`` (an ``.npy`` matrix), in the order of the JSON list at ``texts_path``.

    Saving writes only the two paths: a checkpoint of a head-only run refers to the embedding cache, which
    must stay where it is until the run is finished.
    """

    config_keys = ["table_path", "texts_path"]
    config_file_name = "cached_embeddings_config.json"

    def __init__(self, table_path: str, texts_path: str) -> None:
        super().__init__()
        self.table_path, self.texts_path = str(table_path), str(texts_path)
        for path in (self.table_path, self.texts_path):
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"The embedding cache file {path} is missing: a head-only checkpoint refers to the cache it was "
                    "trained from. Restore it, or start the run again (it re-encodes the texts)."
                )
        texts = json.loads(Path(self.texts_path).read_text(encoding="utf-8"))
        table = np.load(self.table_path, allow_pickle=False)
        if table.ndim != 2 or len(texts) != table.shape[0]:
            raise ValueError(f"{self.table_path} holds {table.shape} embeddings for {len(texts)} texts: the cache is "
                             "damaged; delete both files and run again.")
        self.index = {text: row for row, text in enumerate(texts)}
        self.register_buffer("table", torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32)), persistent=False)

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Row numbers, as ``input_ids`` (the key the trainer collects features by); -1 for a text that was not
        encoded, refused in ``forward`` (the trainer's model card also preprocesses the raw columns, for their
        lengths, without ever embedding them)."""
        texts = [prompt + text for text in inputs] if prompt else list(inputs)
        return {"input_ids": torch.tensor([self.index.get(text, -1) for text in texts], dtype=torch.long)}

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
