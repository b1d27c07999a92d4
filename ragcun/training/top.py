"""Top-layer training: the encoder's top k layers learn a representation whose *whitened* space ranks well.

A linear map on a frozen base that is N(0, I) ranks as whitening plus a choice of directions, and whitening gives
the base's weak, noisy directions the weight of its strong ones (docs/results.md). What can change that is the
representation itself. Here the bottom L − k layers stay frozen and their output is cached once per text
(:mod:`ragcun.encoding.layer_states`); the top k layers, the base's Pooling and Dense layers, and a projection
onto ``output_dim`` directions (started on the base's top principal axes) train through
``SentenceTransformerTrainer`` on those states (:class:`~ragcun.top_layers.CachedLayerStates`). The loss whitens
each batch inside the graph (:class:`~ragcun.losses.batch_whitening.BatchWhitening`), SIGReg shapes the whitened
marginals, and the anchor keeps the base's in-batch ranking (from the base's embeddings, cached with the states and
looked up from the same table the hard negatives are mined with).

The saved model is a plain stack: the base's own modules, its top k layers trained in place, then one ``Dense``
that projects and whitens, fitted on the training texts' trained embeddings (every one, or ``whitening_fit_texts``
drawn across both roles and every source): N(0, I) on the training distribution by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense
from torch import nn

from ragcun.encoding.layer_states import cache_layer_states, check_top_layers, transformer_of
from ragcun.encoding.table import TABLE_SUFFIX, prompt_string, save_table, text_key
from ragcun.identity import cache_key
from ragcun.losses.batch_whitening import BatchWhitening
from ragcun.top_layers import CachedLayerStates
from ragcun.training.head import EncodedTexts, TextGroups
from ragcun.whitening import principal_axes, unit_variance_scale, whitening_dense


def cache_groups(base: SentenceTransformer, base_path: str, groups: TextGroups, k: int, cache_dir: Path,
                 precision: str, revision: str | None, batch_size: int) -> list[Path]:
    """Every training and held-out group's states at the input of layer L − k, cached; their key files."""
    return [cache_layer_states(base, base_path, texts, prompt_name, k, cache_dir, precision, revision, batch_size)
            for split_groups in (groups.train, groups.heldout) for prompt_name, texts in split_groups.items()]


@dataclass
class TopLayersSetup:
    model: SentenceTransformer  # cached states → top layers → the base's modules → projection
    cached: CachedLayerStates
    encoded: EncodedTexts  # the full base's embeddings of the cached texts, as a lookup table
    whitening: BatchWhitening  # the loss's whitening, started on the projection's output at step 0
    posthoc_whitening: Dense  # the base whitened after the fact on the same training texts: the comparison
    base_scale: float


def build(base: SentenceTransformer, base_path: str, groups: TextGroups, k: int, output_dim: int, cache_dir: Path,
          precision: str, revision: str | None, batch_size: int) -> TopLayersSetup:
    """Cache the states, then the training model (sharing the base's top layers and modules: training them trains the
    base in place) and the loss's whitening, started where the projection's output is at step 0."""
    encoder = transformer_of(base).model
    check_top_layers(encoder, k)
    key_files = cache_groups(base, base_path, groups, k, cache_dir, precision, revision, batch_size)
    cached = CachedLayerStates(base_path, k, [str(path) for path in key_files], revision, encoder=encoder)
    keys = cached.keys
    train_keys = _train_keys(groups, base)
    train_rows = np.array(sorted(row for key, row in cached.index.items() if key in train_keys))  # each text once
    base_train = cached.states.embeddings[train_rows]
    width = base_train.shape[1]
    axes = principal_axes(base_train)
    # refuses, before any training, an output_dim wider than the base or above the number of training texts
    posthoc_whitening = whitening_dense(base_train, output_dim, axes)
    vectors = np.ascontiguousarray(axes.vectors[:, :output_dim].T)
    projection = Dense(width, output_dim, bias=True, activation_function=nn.Identity(),
                       init_weight=torch.from_numpy(vectors).float(),
                       init_bias=torch.from_numpy(-vectors @ axes.mean).float())
    model = SentenceTransformer(modules=[cached, *list(base)[1:], projection], prompts=dict(base.prompts),
                                default_prompt_name=base.default_prompt_name, similarity_fn_name="euclidean",
                                device="cpu")
    step_0_covariance = torch.diag(torch.from_numpy(axes.eigenvalues[:output_dim]).float())
    whitening = BatchWhitening(output_dim, covariance=step_0_covariance)
    table_name = cache_key("top-layers-base|" + str(key_files), keys, None, None)  # the base's rows of these groups
    table_path = Path(cache_dir).expanduser() / f"{table_name}{TABLE_SUFFIX}"
    if not table_path.is_file():
        save_table(table_path, cached.states.embeddings, keys)
    return TopLayersSetup(model, cached, EncodedTexts(table_path, train_rows), whitening, posthoc_whitening,
                          unit_variance_scale(base_train, output_dim))


def whitened_base(base: SentenceTransformer, setup: TopLayersSetup) -> SentenceTransformer:
    """The comparison this arm must beat, from the same cache at no encoding cost: the base as released, then a
    whitening onto ``output_dim`` directions fitted on the same training texts (step 0's geometry, whitened after
    the fact instead of inside the loss). Build it before training: training changes the base's top layers in
    place."""
    return SentenceTransformer(modules=[*base, setup.posthoc_whitening], prompts=dict(base.prompts),
                               default_prompt_name=base.default_prompt_name, similarity_fn_name="euclidean",
                               device="cpu")


def _train_keys(groups: TextGroups, base: SentenceTransformer) -> set[str]:
    """The cache keys of the training texts (the held-out ones are never fitted on)."""
    keys: set[str] = set()
    for prompt_name, texts in groups.train.items():
        prompt = prompt_string(base, prompt_name)
        keys.update(text_key(text, prompt) for text in texts)
    return keys


@torch.no_grad()
def trained_embeddings(model: SentenceTransformer, groups: TextGroups, batch_size: int, limit: int | None = None,
                       seed: int = 0) -> np.ndarray:
    """The trained model's output (before the final whitening) for every training text as encoded in use, or for
    ``limit`` of them drawn at random across the groups (both roles, every source, in proportion)."""
    model.eval()
    pairs = [(prompt_name, text) for prompt_name, texts in groups.train.items() for text in texts]
    if limit is not None and len(pairs) > limit:
        chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), limit, replace=False))
        pairs = [pairs[i] for i in chosen]
    parts = []
    for prompt_name in dict.fromkeys(name for name, _ in pairs):
        texts = [text for name, text in pairs if name == prompt_name]
        parts.append(model.encode(texts, prompt_name=prompt_name, batch_size=batch_size, convert_to_numpy=True))
    return np.concatenate(parts).astype(np.float64)


def final_whitening(trained: SentenceTransformer, groups: TextGroups, batch_size: int, limit: int | None = None,
                    seed: int = 0) -> Dense:
    """The trained projection and a whitening fitted on the training texts' trained output (all of them, or
    ``limit`` drawn at random), folded into one standard ``Dense``: N(0, I) on the training texts by construction."""
    projection = trained[-1]
    fitted = whitening_dense(trained_embeddings(trained, groups, batch_size, limit, seed))
    with torch.no_grad():
        weight = fitted.linear.weight.double() @ projection.linear.weight.double()
        bias = fitted.linear.weight.double() @ projection.linear.bias.double() + fitted.linear.bias.double()
    return Dense(projection.in_features, projection.out_features, bias=True, activation_function=nn.Identity(),
                 init_weight=weight.float(), init_bias=bias.float())


def cached_view(trained: SentenceTransformer, final: Dense) -> SentenceTransformer:
    """The released model's encoding of cached texts without the bottom layers: what its held-out figures are read
    from (the same numbers as the saved model's, at the cost of the top layers only)."""
    return SentenceTransformer(modules=[*list(trained)[:-1], final], prompts=dict(trained.prompts),
                               default_prompt_name=trained.default_prompt_name, similarity_fn_name="euclidean",
                               device="cpu")


def assemble(base: SentenceTransformer, trained: SentenceTransformer, final: Dense) -> SentenceTransformer:
    """The released model: the base's encoder (its top layers trained in place), the base's modules, then the
    final whitening (:func:`final_whitening`)."""
    stack = SentenceTransformer(modules=[base[0], *list(trained)[1:-1], final], prompts=dict(base.prompts),
                                default_prompt_name=base.default_prompt_name, similarity_fn_name="euclidean",
                                device=str(base.device))
    stack.max_seq_length = base.max_seq_length
    return stack
