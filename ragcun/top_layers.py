"""CachedLayerStates: the top k layers of an encoder, run on the states cached at their input.

With this module first in a SentenceTransformer, followed by the base's own Pooling, Dense and Normalize, the
trainer, the losses, the evaluator, checkpoints and resumption see an ordinary model whose top k layers train, at
the cost of those k layers alone. ``preprocess`` maps each (prompt, text) to its row of the cache
(:mod:`ragcun.encoding.layer_states`); ``forward`` pads the rows' token states and runs the top layers on them. It
exists only while training: the saved model puts the full encoder, its top layers trained, in its place
(:mod:`ragcun.training.top`).

This module's path is part of the checkpoint format (a checkpoint's modules.json names it). Keep it here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule
from torch import nn

from ragcun.encoding.layer_states import LayerStates, read_groups, top_encoder
from ragcun.encoding.table import text_key


class CachedLayerStates(InputModule):
    """Texts → the cached states of their tokens → the top ``k`` layers of ``base_model``'s encoder.

    ``key_files`` name the cached groups (see :func:`~ragcun.encoding.layer_states.cache_layer_states`). Saving
    writes the paths, the base and k in the config and the top layers' weights beside it; loading rebuilds the top
    from the base and restores them.
    """

    config_keys = ["base_model", "k", "key_files", "revision"]
    config_file_name = "cached_layer_states_config.json"
    save_in_root = False

    def __init__(self, base_model: str, k: int, key_files: Sequence[str], revision: str | None = None,
                 encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.base_model, self.k, self.key_files, self.revision = str(base_model), int(k), list(key_files), revision
        if encoder is None:
            encoder = SentenceTransformer(self.base_model, revision=revision, device="cpu")[0].model
        self.top = top_encoder(encoder, self.k)
        if "embed_tokens" in self.top._modules:  # the token table is below the cached states: not part of the top
            self.top._modules["embed_tokens"] = None
        self.__dict__["_cache"] = None  # read on first use: a checkpoint loaded only for its weights never reads it

    def _cached(self) -> tuple[LayerStates, list[str], dict[str, int]]:
        """The states, their keys (a text in two groups has two rows, both keys kept) and each key's row. Not a
        buffer: never saved with the weights, never broadcast by DDP."""
        if self.__dict__["_cache"] is None:
            states, keys = read_groups(self.key_files)
            self.__dict__["_cache"] = (states, keys, {key: row for row, key in enumerate(keys)})
        return self.__dict__["_cache"]

    @property
    def states(self) -> LayerStates:
        return self._cached()[0]

    @property
    def keys(self) -> list[str]:
        return self._cached()[1]

    @property
    def index(self) -> dict[str, int]:
        return self._cached()[2]

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Row numbers as ``input_ids``; -1 for a text that was not cached, refused in ``forward``."""
        rows = [self.index.get(text_key(text, prompt), -1) for text in inputs]
        return {"input_ids": torch.tensor(rows, dtype=torch.long)}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        rows = features["input_ids"].cpu()
        missing = int((rows < 0).sum())
        if missing:
            raise ValueError(f"{missing} of {rows.numel()} texts have no cached states. Only the training and held-out "
                             "texts, with their prompts, are cached; encode other texts with the saved model.")
        starts, ends = self.states.offsets[rows], self.states.offsets[rows + 1]
        lengths = ends - starts
        width = int(lengths.max())
        device = next(self.top.parameters()).device
        padded = torch.zeros(len(rows), width, self.states.states.shape[1])
        for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
            padded[i, : end - start] = self.states.states[start:end].float()
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        output = self.top(inputs_embeds=padded.to(device), attention_mask=mask.to(device))
        features["token_embeddings"] = output.last_hidden_state
        features["attention_mask"] = mask.to(device)
        return features

    def get_embedding_dimension(self) -> int:
        return int(self.top.config.hidden_size)

    get_sentence_embedding_dimension = get_embedding_dimension

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             **kwargs: Any) -> "CachedLayerStates":
        config = cls.load_config(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                                 revision=revision, local_files_only=local_files_only)
        module = cls(**config)
        cls.load_torch_weights(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                               revision=revision, local_files_only=local_files_only, model=module)
        return module

