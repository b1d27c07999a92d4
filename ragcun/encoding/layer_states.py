"""The token states entering an encoder's top k layers, computed once per text and kept on disk.

Training only the top k of L layers leaves the bottom L − k frozen: what they compute for a text never changes, so
it is computed once, here, and training runs the top k layers alone on those states (:mod:`ragcun.top_layers`).
On a CPU that turns the cost of a step from the whole encoder to k of its L layers.

The states are keyed like the embedding cache (:func:`ragcun.identity.embedding_identity`: the model's files or Hub
commit, the precision) with k and the depth in the role, and the texts, the prompt and max_seq_length in the key:
a cache of another model, k, revision or length gets another file name, so it is rebuilt, never reused. Each shard
of ``SHARD_SIZE`` texts is written as it finishes (a kill resumes from the last one) and also holds the full
model's sentence embeddings of its texts: the frozen base's, which the anchor distils from.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from torch import nn

from ragcun.encoding.precision import encoding_precision
from ragcun.encoding.table import prompt_string, text_key
from ragcun.identity import cache_key, embedding_identity
from ragcun.io import atomic_write, atomic_write_text

SHARD_SIZE = 512
STATES_SUFFIX = ".states"
KEYS_SUFFIX = ".states-keys.json"


def encoder_layers(hf_model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Where a Hugging Face encoder keeps its layers (``layers`` in Gemma, ``encoder.layer`` in BERT): the first
    ModuleList with exactly ``config.num_hidden_layers`` entries."""
    depth = getattr(getattr(hf_model, "config", None), "num_hidden_layers", None)
    for name, module in hf_model.named_modules():
        if isinstance(module, nn.ModuleList) and depth is not None and len(module) == depth:
            return name, module
    raise ValueError(f"Cannot find the layers of {type(hf_model).__name__}: no ModuleList of num_hidden_layers="
                     f"{depth} modules. Training its top layers from cached states supports Gemma- and BERT-like "
                     "encoders; train the head only (train_head_only) or the whole backbone instead.")


def check_top_layers(hf_model: nn.Module, k: int) -> int:
    """The encoder's depth, after checking that its top ``k`` layers can be trained apart (1 ≤ k ≤ depth)."""
    depth = len(encoder_layers(hf_model)[1])
    if not 1 <= k <= depth:
        raise ValueError(f"train_top_layers={k}, but {type(hf_model).__name__} has {depth} layers: choose k from 1 to "
                         f"{depth} (k = {depth} trains every layer above the token embeddings).")
    return depth


class _PassThroughEmbeddings(nn.Module):
    """Stands in for a BERT-like ``embeddings`` module: the given states are already past it."""

    def forward(self, *args, inputs_embeds: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if inputs_embeds is None:
            raise ValueError("The top layers take cached states (inputs_embeds), not token ids.")
        return inputs_embeds


def top_encoder(hf_model: nn.Module, k: int) -> nn.Module:
    """The encoder above layer L − k, taking that layer's input states as ``inputs_embeds``.

    A shallow copy whose layer list holds only the top ``k`` layers: they, the final norm and everything else are
    the *same* modules as ``hf_model``'s, so training them trains the full encoder in place. Its config lists only
    the top layers' attention types (Gemma picks each layer's mask by index), and a BERT-like embedding module is
    bypassed (it would add position embeddings to the states a second time).
    """
    depth = check_top_layers(hf_model, k)
    path, layers = encoder_layers(hf_model)
    top = copy.copy(hf_model)
    top._modules = dict(hf_model._modules)
    config = copy.deepcopy(hf_model.config)
    config.num_hidden_layers = k
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[depth - k:]
    top.config = config
    owner = top
    *parents, leaf = path.split(".")
    for name in parents:  # copy each module on the way down, so that only the copy loses its bottom layers
        child = copy.copy(owner._modules[name])
        child._modules = dict(child._modules)
        if hasattr(child, "config"):
            child.config = config
        owner._modules[name] = child
        owner = child
    owner._modules[leaf] = nn.ModuleList(list(layers)[depth - k:])
    if isinstance(top._modules.get("embeddings"), nn.Module):
        top._modules["embeddings"] = _PassThroughEmbeddings()
    return top


def transformer_of(model: SentenceTransformer) -> Transformer:
    """The model's first module, which must be a Hugging Face Transformer, with pooling that keeps prompt tokens."""
    first = model[0]
    if not isinstance(first, Transformer):
        raise ValueError(f"Training the top layers needs a model whose first module is a Transformer; this one starts "
                         f"with {type(first).__name__}.")
    for module in model:
        if isinstance(module, Pooling) and not module.include_prompt:
            raise ValueError("The model's Pooling excludes prompt tokens (include_prompt false), which cached states "
                             "do not record: train the head only, or the whole backbone.")
    return first


@dataclass
class LayerStates:
    """Every text's states at the input of layer L − k, flat: rows ``offsets[i]:offsets[i+1]`` of ``states`` are
    text i's tokens; ``embeddings[i]`` is the full model's sentence embedding of it."""

    states: torch.Tensor  # (total tokens, hidden), bfloat16 or float32
    offsets: torch.Tensor  # (texts + 1,), int64
    embeddings: np.ndarray  # (texts, dimension), float32

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @staticmethod
    def join(parts: list["LayerStates"]) -> "LayerStates":
        lengths = torch.cat([part.offsets.diff() for part in parts])
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        return LayerStates(torch.cat([part.states for part in parts]), offsets,
                           np.concatenate([part.embeddings for part in parts]))


def layer_states_identity(model_path: str, depth: int, k: int, precision: str, revision: str | None = None) -> str:
    """What the cache knows these states by: the model, the layer they enter (L − k of L) and the precision."""
    return embedding_identity(model_path, f"layer-states|{depth - k}-of-{depth}", precision, revision)


def _save_shard(path: Path, part: LayerStates) -> None:
    dtype = "bfloat16" if part.states.dtype == torch.bfloat16 else "float32"
    bits = part.states.view(torch.int16).numpy() if dtype == "bfloat16" else part.states.numpy()
    atomic_write(path, lambda tmp: np.savez(tmp, states=bits, offsets=part.offsets.numpy(),
                                            embeddings=part.embeddings, dtype=np.array(dtype)))


def _load_shard(path: Path, texts: int, hidden: int) -> LayerStates:
    with np.load(path, allow_pickle=False) as saved:
        raw, offsets, embeddings, dtype = saved["states"], saved["offsets"], saved["embeddings"], str(saved["dtype"])
    if len(offsets) != texts + 1 or raw.ndim != 2 or raw.shape[1] != hidden or offsets[-1] != len(raw):
        raise ValueError(f"{path} does not hold the states of {texts} texts of width {hidden}: the cache is damaged; "
                         "delete the file and run again (only that shard is recomputed).")
    states = torch.from_numpy(raw)
    states = states.view(torch.bfloat16) if dtype == "bfloat16" else states.float()
    return LayerStates(states, torch.from_numpy(offsets).long(), embeddings.astype(np.float32))


@torch.no_grad()
def _compute(model: SentenceTransformer, texts: list[str], prompt: str | None, k: int, store_dtype: torch.dtype,
             batch_size: int) -> LayerStates:
    """Run the full model over ``texts`` (prompt prepended as ``encode`` does), catching each batch's states as they
    enter layer L − k; the model's own output is the sentence embedding."""
    hf_model = transformer_of(model).model
    _, layers = encoder_layers(hf_model)
    caught: list[torch.Tensor] = []

    def catch(module: nn.Module, args: tuple, kwargs: dict) -> None:
        caught.append(args[0] if args else kwargs["hidden_states"])

    handle = layers[len(layers) - k].register_forward_pre_hook(catch, with_kwargs=True)
    states, lengths, embeddings = [], [], []
    try:
        model.eval()
        for start in range(0, len(texts), batch_size):
            caught.clear()
            features = model.preprocess(texts[start:start + batch_size], prompt=prompt)
            features = {key: value.to(model.device) if isinstance(value, torch.Tensor) else value
                        for key, value in features.items()}
            out = model(features)
            mask = features["attention_mask"].bool()
            states.append(caught[0][mask].to("cpu", store_dtype))
            lengths.append(mask.sum(1).cpu())
            embeddings.append(out["sentence_embedding"].float().cpu().numpy())
    finally:
        handle.remove()
    lengths_all = torch.cat(lengths).long()
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths_all.cumsum(0)])
    return LayerStates(torch.cat(states), offsets, np.concatenate(embeddings))


def cache_layer_states(model: SentenceTransformer, model_path: str, texts: list[str], prompt_name: str | None, k: int,
                       cache_dir: Path, precision: str = "float32", revision: str | None = None,
                       batch_size: int = 16, shard_size: int = SHARD_SIZE) -> Path:
    """Make sure ``texts``' states entering layer L − k of ``model`` (presented with ``prompt_name``) are in
    ``cache_dir``, computing the missing shards (in ``precision``: bfloat16 states are stored as bfloat16), and
    return the group's key file: the (prompt, text) key of each row, which :func:`read_groups` reads them back by."""
    hf_model = transformer_of(model).model
    depth = check_top_layers(hf_model, k)
    hidden = int(hf_model.config.hidden_size)
    identity = layer_states_identity(model_path, depth, k, precision, revision)
    key = cache_key(identity, texts, prompt_name, model.max_seq_length)
    prompt = prompt_string(model, prompt_name)
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    store_dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    starts = range(0, len(texts), shard_size)
    with encoding_precision(model, precision):
        for number, start in enumerate(starts):
            path = cache_dir / f"{key}{STATES_SUFFIX}-{number}.npz"
            if not path.is_file():
                print(f"layer states: shard {number + 1}/{len(starts)} ({len(texts)} texts) -> {path.name}", flush=True)
                _save_shard(path, _compute(model, texts[start:start + shard_size], prompt, k, store_dtype, batch_size))
    key_file = cache_dir / f"{key}{KEYS_SUFFIX}"
    if not key_file.is_file():
        keys = [text_key(text, prompt) for text in texts]
        atomic_write_text(key_file, json.dumps({"keys": keys, "hidden": hidden, "shard_size": shard_size}))
    return key_file


def read_groups(key_files: list[str]) -> tuple[LayerStates, list[str]]:
    """Every group's states joined, with their keys, from the key files :func:`cache_layer_states` wrote."""
    parts, keys = [], []
    for key_file in key_files:
        path = Path(key_file)
        if not path.is_file():
            raise FileNotFoundError(f"The layer-state cache file {path} is missing: a checkpoint of a top-layer run "
                                    "refers to the cache it was trained from. Restore it, or start the run again.")
        saved = json.loads(path.read_text(encoding="utf-8"))
        prefix = str(path)[: -len(KEYS_SUFFIX)]
        shard_size, hidden, group_keys = saved["shard_size"], saved["hidden"], saved["keys"]
        for number in range(math.ceil(len(group_keys) / shard_size)):
            count = min(shard_size, len(group_keys) - number * shard_size)
            parts.append(_load_shard(Path(f"{prefix}{STATES_SUFFIX}-{number}.npz"), count, hidden))
        keys += group_keys
    if not parts:
        raise ValueError("No cached layer states to train on: the training data holds no texts.")
    return LayerStates.join(parts), keys
