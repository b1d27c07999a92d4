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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense
from torch import nn
from transformers import TrainerCallback

from ragcun.cached_input import CachedEmbeddings
from ragcun.encoding.cache import encode_cached
from ragcun.encoding.precision import encoding_precision
from ragcun.encoding.table import TABLE_SUFFIX, key_parts, load_table, prompt_string, save_table, text_key
from ragcun.identity import cache_key, embedding_identity
from ragcun.model import fit_projection
from ragcun.whitening import principal_axes, tempered_whitening

# Recipe keys that only mean something when the backbone trains: given with head-only training, they are refused.
BACKBONE_KEYS = ("freeze_layers", "freeze_embeddings", "gradcache_mini_batch_size")


def check_head_only_recipe(given: dict[str, object], defaults: dict[str, object]) -> None:
    """Refuse, before anything is encoded, a head-only recipe that also asks to train (part of) the backbone:
    a backbone key set to anything but its default (a recipe written out by an earlier run lists them all)."""
    clash = sorted(key for key in BACKBONE_KEYS if key in given and given[key] != defaults[key])
    if clash:
        raise ValueError(
            f"train_head_only keeps the whole backbone frozen, but the recipe also sets {', '.join(clash)}, which "
            "choose what of the backbone trains. Remove them, or set train_head_only false to fine-tune the backbone."
        )


@dataclass
class TextGroups:
    """The texts to encode, by the prompt name they are presented with (None: the model's default, if any)."""

    train: dict[str | None, list[str]]
    heldout: dict[str | None, list[str]]


def text_groups(train: Dataset, heldout: Dataset | None, column_prompts: dict[str, str] | None,
                prompts: dict[str, str]) -> TextGroups:
    """What the trainer and the held-out evaluator will look up: training columns with the collator's column
    prompts (``column_prompts`` maps a column to a prompt name here), held-out queries and documents with the
    ``query`` / ``document`` prompts when the model has them (as the evaluator encodes them)."""

    def collect(dataset: Dataset, prompt_of) -> dict[str | None, list[str]]:
        groups: dict[str | None, dict[str, None]] = {}
        for column in dataset.column_names:
            groups.setdefault(prompt_of(column), {}).update(dict.fromkeys(t for t in dataset[column] if t is not None))
        return {name: list(texts) for name, texts in groups.items()}

    return TextGroups(
        train=collect(train, lambda column: (column_prompts or {}).get(column)),
        heldout=collect(heldout, lambda column: heldout_prompt(column, prompts)) if heldout is not None else {},
    )


def heldout_prompt(column: str, prompts: dict[str, str]) -> str | None:
    """The prompt a held-out text is encoded with, as the evaluator encodes it: ``query`` for the anchor column,
    ``document`` for the others, None where the model has no such prompt."""
    name = "query" if column == "anchor" else "document"
    return name if name in prompts else None


@dataclass
class EncodedTexts:
    table_path: Path  # a lookup table (:mod:`ragcun.encoding.table`): rows and their (prompt, text) keys
    train_rows: np.ndarray  # rows of the table that hold training texts (the head's init is fitted on those)

    def read(self) -> tuple[np.ndarray, list[str]]:
        """The table's rows and keys."""
        return load_table(self.table_path)


def frozen_base_id(base_path: str, precision: str, revision: str | None = None) -> str:
    """What the cache knows the frozen base by (:func:`~ragcun.identity.embedding_identity`: its fingerprint, a Hub
    id's commit at ``revision`` when pinned, and the precision it encoded in)."""
    return embedding_identity(base_path, "frozen-base", precision, revision)


def encode_own_shards(base: SentenceTransformer, base_path: str, groups: TextGroups, cache_dir: Path,
                      batch_size: int, process_index: int, num_processes: int, precision: str = "float32",
                      revision: str | None = None) -> None:
    """This process's share of every group's missing shards (see ``encode_cached``): under ``accelerate launch``
    N processes encode the texts N times faster; :func:`encode_once` then joins them."""
    model_id = frozen_base_id(base_path, precision, revision)
    with encoding_precision(base, precision):
        for split_groups in (groups.train, groups.heldout):
            for prompt_name, texts in split_groups.items():
                encode_cached(base, model_id, texts, prompt_name, Path(cache_dir).expanduser().resolve(),
                              batch_size=batch_size, process_share=(process_index, num_processes))


def encode_once(base: SentenceTransformer, base_path: str, groups: TextGroups, cache_dir: Path,
                batch_size: int, precision: str = "float32", revision: str | None = None) -> EncodedTexts:
    """The frozen base's embeddings of every group, encoded as at inference (``encode(prompt_name=...)``, the
    transformer in ``precision``) and cached by evaluate.py's ``encode_cached`` (keyed by the base's fingerprint and
    precision, the texts, the prompt and max_seq_length, in resumable shards), then joined into one lookup table
    keyed by what the model's preprocessing receives: the prompt string and the text (:func:`text_key`)."""
    model_id = frozen_base_id(base_path, precision, revision)
    cache_dir = Path(cache_dir).expanduser().resolve()
    keys: list[str] = []
    parts: list[np.ndarray] = []
    train_keys: set[str] = set()
    with encoding_precision(base, precision):  # afterwards the saved stack encodes as released
        for split, split_groups in (("train", groups.train), ("heldout", groups.heldout)):
            for prompt_name, texts in split_groups.items():
                prefix = prompt_string(base, prompt_name)
                parts.append(encode_cached(base, model_id, texts, prompt_name, cache_dir, batch_size=batch_size))
                group_keys = [text_key(text, prefix) for text in texts]
                keys += group_keys
                if split == "train":
                    train_keys.update(group_keys)
    table = np.concatenate(parts)
    table_path = cache_dir / f"{cache_key(model_id, keys, None, base.max_seq_length)}{TABLE_SUFFIX}"
    if not table_path.is_file():
        save_table(table_path, table, keys)
    train_rows = np.array(sorted({row for row, key in enumerate(keys) if key in train_keys}))
    return EncodedTexts(table_path, train_rows)


def check_same_table(checkpoint: Path, encoded: EncodedTexts) -> None:
    """A resumed head must keep training on the embeddings it started from, not on another table."""
    config = checkpoint / CachedEmbeddings.config_file_name
    if not config.is_file():
        return
    saved_config = json.loads(config.read_text(encoding="utf-8"))
    saved = saved_config.get("table_path")
    if saved is not None and Path(saved) != encoded.table_path and not _same_rows(saved_config, encoded):
        raise ValueError(
            f"{checkpoint} was trained on the embeddings in {saved}, but this recipe encodes to {encoded.table_path} "
            "(another base, data, prompt or max_seq_length). Resume with the recipe the run started with, or start a "
            "new run in another output_dir."
        )


def _same_rows(saved_config: dict, encoded: EncodedTexts) -> bool:
    """Whether a checkpoint written before the one table format (a ``.npy`` and its prompt + text list) was trained
    on the embeddings ``encoded`` holds, text for text (to float noise): then it resumes on the new table."""
    if saved_config.get("texts_path") is None:
        return False
    earlier = CachedEmbeddings(saved_config["table_path"], saved_config["texts_path"])
    table, keys = encoded.read()
    rows = earlier.preprocess(["".join(key_parts(key)) for key in keys])["input_ids"]
    # the table repeats a text that is both a training and a held-out text, encoded in two batches (equal up to padding
    # noise); the earlier index holds it once
    return len(earlier.index) == len(set(keys)) and bool((rows >= 0).all()) and np.allclose(
        earlier.table[rows].numpy(), table, rtol=1e-4, atol=1e-5)


# Pre-activation spread of a deep head's Tanh layers at init: tanh(x) is within 2% of x at one standard deviation,
# so step 0 ranks (almost) as the linear init does, and the layers can still learn to bend.
TANH_INPUT_STD = 0.25


def build_head(train_embeddings: np.ndarray, output_dim: int, init: str, seed: int, samples: int,
               layers: int = 1) -> list[Dense]:
    """The head's Dense layers on the base's output, fitted on a sample of ``samples`` training embeddings (never
    the held-out ones), as the full stack fits its projection on ``init_samples`` texts.

    One layer: the fitted projection (identity activation). More: ``layers - 1`` square Dense + Tanh layers first,
    initialised near-linear (a scaled identity keeping pre-activations small, see ``TANH_INPUT_STD``), then the
    fitted projection divided by that scale, so the whole head starts as (almost) the one-layer head. Only standard
    sentence-transformers modules: the saved model loads with no custom code.
    """
    if layers < 1:
        raise ValueError(f"head_layers must be a positive integer, got {layers}.")
    rng = np.random.default_rng(seed)
    if len(train_embeddings) > samples:
        train_embeddings = train_embeddings[np.sort(rng.choice(len(train_embeddings), samples, replace=False))]
    weight, bias = fit_projection(train_embeddings, output_dim, init, seed)  # type: ignore[arg-type]
    width = train_embeddings.shape[1]
    hidden: list[Dense] = []
    if layers > 1:
        shrink = TANH_INPUT_STD / float(np.sqrt(train_embeddings.var(axis=0).mean()))
        for depth in range(layers - 1):
            scale = shrink if depth == 0 else 1.0
            hidden.append(Dense(width, width, bias=True, activation_function=nn.Tanh(),
                                init_weight=torch.eye(width) * scale, init_bias=torch.zeros(width)))
        weight = weight / shrink
    last = Dense(width, output_dim, bias=True, activation_function=nn.Identity(), init_weight=weight, init_bias=bias)
    return [*hidden, last]


def build_isotropic_head(train_embeddings: np.ndarray, output_dim: int) -> list[Dense]:
    """Full PCA whitening of the base (frozen), then a Dense to ``output_dim`` whose rows stay orthonormal.

    A linear head that is N(0, I) on the training distribution must be W = U Σ^(−1/2) (centred), with U's rows
    orthonormal: whitening, then a choice of ``output_dim`` directions of the whitened space. Below the base's width
    that choice is free, and it is all training can change here (:class:`OrthonormalRows` retracts U after every
    step), so the head stays N(0, I) on the training texts by construction and MNRL picks the directions that rank
    best. U starts on the top principal axes: step 0 ranks as full whitening on them (γ 1). The whitening is fitted on
    every training embedding (a D x D covariance needs many more than D). Standard modules only: two Dense layers.
    """
    width = train_embeddings.shape[1]
    if output_dim > width:
        raise ValueError(f"isotropic_head keeps output_dim={output_dim} of the base's {width} whitened directions: "
                         f"use output_dim <= {width}.")
    if len(train_embeddings) <= width:
        raise ValueError(f"isotropic_head fits a {width} x {width} covariance on the training embeddings and needs "
                         f"more than {width} of them; this run has {len(train_embeddings)}. Add training data.")
    axes = principal_axes(train_embeddings)
    weight, bias = tempered_whitening(axes, gamma=1.0)
    whitening = Dense(width, width, bias=True, activation_function=nn.Identity(), init_weight=weight, init_bias=bias)
    whitening.requires_grad_(False)
    top_axes = torch.from_numpy(np.ascontiguousarray(axes.vectors[:, :output_dim].T)).float()
    choice = Dense(width, output_dim, bias=False, activation_function=nn.Identity(), init_weight=top_axes)
    return [whitening, choice]


class OrthonormalRows(TrainerCallback):
    """Keeps a Dense layer's rows orthonormal: after every optimizer step its weight is replaced by the nearest matrix
    with orthonormal rows (the polar factor U Vᵀ of its SVD), a retraction onto the Stiefel manifold."""

    def __init__(self, dense: Dense) -> None:
        self.dense = dense

    def on_step_end(self, args, state, control, **kwargs):
        with torch.no_grad():
            weight = self.dense.linear.weight
            left, _, right = torch.linalg.svd(weight.double(), full_matrices=False)
            weight.copy_((left @ right).to(weight.dtype))


def lookup_model(base: SentenceTransformer, encoded: EncodedTexts) -> SentenceTransformer:
    """The frozen base as a table lookup, ranking with the base's own similarity: what hard negatives are mined
    with, and what the base's held-out figures are read from."""
    return SentenceTransformer(modules=[CachedEmbeddings(str(encoded.table_path))],
                               prompts=dict(base.prompts), default_prompt_name=base.default_prompt_name,
                               similarity_fn_name=base.similarity_fn_name or "cosine", device="cpu")


def training_model(base: SentenceTransformer, encoded: EncodedTexts, head: list[Dense]) -> SentenceTransformer:
    """What the trainer trains: the cached lookup in the backbone's place, then the head."""
    return SentenceTransformer(modules=[CachedEmbeddings(str(encoded.table_path)), *head],
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
