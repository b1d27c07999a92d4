"""Head-only training: the base, frozen as released, encodes each text once; a head learns the Gaussian shape.

Fine-tuning the whole backbone on a few thousand pairs costs retrieval quality by itself (docs/results.md), and
on a CPU every step of it takes seconds. Here the backbone stays exactly as released, normalization included,
and only a Dense head on top of it is trained. Every training and held-out text is encoded once into the
embedding cache (the one evaluate.py uses, in resumable shards); the head then trains on those vectors through
``SentenceTransformerTrainer`` with a :class:`~ragcun.cached_input.CachedEmbeddings` lookup in the backbone's
place, so batches of thousands and thousands of steps cost seconds. The saved model is the plain stack: the
base's modules, then the head, euclidean, with the base's prompts.

The ``scaled`` init (a uniform scale to unit average variance, no rotation, no centring) makes step 0 rank by
L2 exactly as the base ranks by cosine: training then only has to shape the cloud.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense
from torch import nn

from ragcun.cached_input import CachedEmbeddings
from ragcun.embedding_cache import cache_key, encode_cached, folder_fingerprint
from ragcun.model import fit_projection

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ragcun" / "embeddings"
# Recipe keys that only mean something when the backbone trains: given with head-only training, they are refused.
BACKBONE_KEYS = ("freeze_layers", "freeze_embeddings", "gradcache_mini_batch_size")


def check_head_only_recipe(given_keys: set[str]) -> None:
    """Refuse, before anything is encoded, a head-only recipe that also asks to train (part of) the backbone."""
    clash = sorted(given_keys & set(BACKBONE_KEYS))
    if clash:
        raise ValueError(
            f"train_head_only keeps the whole backbone frozen, but the recipe also sets {', '.join(clash)}, which "
            "choose what of the backbone trains. Remove them, or set train_head_only false to fine-tune the backbone."
        )


def prompted_texts(datasets: list[Dataset | None], prompts: dict[str, str]) -> list[str]:
    """Every distinct text as training and the held-out evaluator present it: anchors with the query prompt,
    the other columns with the document prompt."""
    texts: dict[str, None] = {}
    for dataset in datasets:
        if dataset is None:
            continue
        for column in dataset.column_names:
            prompt = prompts.get("query" if column == "anchor" else "document", "")
            texts.update((prompt + text, None) for text in dataset[column])
    return list(texts)


@dataclass
class EncodedTexts:
    table_path: Path
    texts_path: Path


def encode_once(base: SentenceTransformer, base_path: str, texts: list[str], cache_dir: Path, batch_size: int) -> EncodedTexts:
    """The frozen base's embeddings of ``texts`` (prompts already in them), cached under a key of the base's files,
    the texts and max_seq_length: a cache made by another base, prompt or length is never read back."""
    model_id = f"{folder_fingerprint(base_path)}|frozen-base"
    key = cache_key(model_id, texts, None, base.max_seq_length)
    cache_dir = Path(cache_dir).expanduser()
    encode_cached(base, model_id, texts, None, cache_dir, batch_size=batch_size)
    texts_path = cache_dir / f"{key}.texts.json"
    if not texts_path.is_file():
        tmp = texts_path.with_name(texts_path.name + ".tmp")
        tmp.write_text(json.dumps(texts), encoding="utf-8")
        os.replace(tmp, texts_path)
    return EncodedTexts(cache_dir / f"{key}.npy", texts_path)


def build_head(table: np.ndarray, output_dim: int, init: str, seed: int) -> Dense:
    """One Dense layer (identity activation) on the base's output, fitted on the cached embeddings."""
    weight, bias = fit_projection(table, output_dim, init, seed)  # type: ignore[arg-type]
    return Dense(table.shape[1], output_dim, bias=True, activation_function=nn.Identity(), init_weight=weight,
                 init_bias=bias)


def training_model(base: SentenceTransformer, encoded: EncodedTexts, head: Dense) -> SentenceTransformer:
    """What the trainer trains: the cached lookup in the backbone's place, then the head."""
    return SentenceTransformer(modules=[CachedEmbeddings(str(encoded.table_path), str(encoded.texts_path)), head],
                               prompts=dict(base.prompts), default_prompt_name=base.default_prompt_name,
                               similarity_fn_name="euclidean", device="cpu")


def assemble(base: SentenceTransformer, trained: SentenceTransformer) -> SentenceTransformer:
    """The released model: the base's own modules (as they encoded the cache), then the trained head."""
    head = [module for module in trained if not isinstance(module, CachedEmbeddings)]
    stack = SentenceTransformer(modules=[*base, *head], prompts=dict(base.prompts),
                                default_prompt_name=base.default_prompt_name, similarity_fn_name="euclidean",
                                device=str(base.device))
    stack.max_seq_length = base.max_seq_length
    return stack
