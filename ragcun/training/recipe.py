"""Recipes: a YAML file plus command-line overrides, parsed into dataclasses with HfArgumentParser.

Every ``SentenceTransformerTrainingArguments`` field is a recipe key and a ``--flag`` for free; the
ragcun options live in the three dataclasses below. A key that exists nowhere is refused with the
closest valid name, before anything is loaded.
"""

from __future__ import annotations

import argparse
import difflib
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from sentence_transformers import SentenceTransformerTrainingArguments
from transformers import HfArgumentParser

from ragcun.encoding.precision import PRECISION_CHOICES
from ragcun.losses import SIGReg
from ragcun.model import DEFAULT_BASE_MODEL, PROJECTION_INITS
from ragcun.training.monitor import greater_is_better

OBJECTIVES = ("lejepa", "mnrl_gor")


def option(default: Any = MISSING, help: str = "", factory: Any = MISSING) -> Any:
    """A recipe key: a dataclass field with its ``--help`` text (HfArgumentParser reads ``metadata["help"]``)."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelArguments:
    """The model stack (see ``ragcun.build_model``)."""

    base_model: str = option(DEFAULT_BASE_MODEL, "Hub id or local folder of the base embedder.")
    base_revision: str | None = option(
        None,
        "A Hub base's revision (branch, tag or 40-hex commit): loaded at it, and its cached embeddings keyed by the "
        "commit it resolves to. Default: the commit the local Hugging Face cache holds for the default branch. Needed "
        "only when that cannot be read offline; a local folder is keyed by its files and ignores it.",
    )
    output_dim: int = option(512, "Width of the N(0, I) embedding.")
    init: str = option("mrl", f"Projection init: {', '.join(PROJECTION_INITS)}.")
    init_samples: int = option(2000, "Training texts used to fit the whiten/mrl projection.")
    freeze_layers: int = option(4, "Freeze the first N transformer layers.")
    freeze_embeddings: bool = option(False, "Freeze the token embedding matrix.")
    max_seq_length: int | None = option(256, "Truncate inputs to this many tokens.")
    train_head_only: bool = option(
        False,
        "Keep the base frozen as released (its Normalize included) and train only the new Dense head "
        "on embeddings of the training texts computed once (cached in embedding_cache_dir). Minutes on a "
        "CPU instead of hours; freeze_layers, freeze_embeddings and gradcache_mini_batch_size do not apply.",
    )
    head_layers: int = option(
        1,
        "train_head_only: Dense layers in the head. 1: one linear projection; more: that many - 1 "
        "square Dense + Tanh layers before it, initialised near-linear (standard modules only).",
    )
    encode_precision: str = option(
        "float32",
        "train_head_only: the precision the frozen base encodes the training texts in: float32, bfloat16 (the "
        "transformer under autocast; several times faster where the CPU computes bfloat16 natively, e.g. "
        "AVX512-BF16 or AMX, and several times slower where it does not) or auto (bfloat16 only where native). "
        "Part of the cache key; evaluate.py --precision is its counterpart.",
    )
    isotropic_head: bool = option(
        False,
        "train_head_only: the head is full PCA whitening of the base (fitted on the training embeddings, frozen), "
        "then a Dense to output_dim whose rows stay orthonormal: N(0, I) on the training texts by construction, and "
        "training only chooses which output_dim whitened directions to keep. init and head_layers do not apply.",
    )
    train_top_layers: int = option(
        0,
        "Train the encoder's top k layers (and the base's Pooling and Dense layers) from the token states cached at "
        "their input, computed once with the rest frozen (in embedding_cache_dir, like the head's embeddings, and in "
        "encode_precision), then whiten the output onto output_dim directions: the saved model is the full encoder "
        "with its top k layers trained, the base's modules and one whitening Dense fitted on every training text. "
        "0: off. Cannot be combined with train_head_only.",
    )
    whitening_fit_texts: int | None = option(
        None,
        "train_top_layers: the final whitening is fitted on the trained model's output for this many training texts, "
        "drawn at random across sources and roles (null: all of them; each costs a forward pass of the top layers).",
    )
    embedding_cache_dir: str | None = option(
        None,
        "Where train_head_only caches embeddings (default ~/.cache/ragcun/embeddings, "
        "shared with evaluate.py).",
    )
    tiny_base: bool = option(
        False,
        "Ignore base_model and build a tiny random EmbeddingGemma-shaped base from a config "
        "(offline demos and tests): tokenizer trained on the training texts.",
    )
    tiny_hidden_size: int = option(64, "Hidden size of the tiny base.")
    tiny_num_layers: int = option(4, "Transformer layers of the tiny base.")

    def __post_init__(self) -> None:
        if self.output_dim <= 0:
            raise ValueError(f"output_dim must be a positive integer, got {self.output_dim}.")
        if self.init not in PROJECTION_INITS:
            raise ValueError(f"init must be one of {', '.join(PROJECTION_INITS)}, got {self.init!r}.")
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be >= 0, got {self.freeze_layers}.")
        if self.encode_precision not in PRECISION_CHOICES:
            raise ValueError(f"encode_precision must be one of {', '.join(PRECISION_CHOICES)}, "
                             f"got {self.encode_precision!r}.")
        if self.train_top_layers < 0:
            raise ValueError(f"train_top_layers must be >= 0 (0: off), got {self.train_top_layers}.")
        if self.whitening_fit_texts is not None and self.whitening_fit_texts < 1:
            raise ValueError(f"whitening_fit_texts must be a positive number of texts (or null: all of them), got "
                             f"{self.whitening_fit_texts}.")
        if self.train_top_layers and self.train_head_only:
            raise ValueError("train_top_layers trains part of the encoder and train_head_only keeps all of it frozen: "
                             "set one of them.")
        if self.encode_precision != "float32" and not (self.train_head_only or self.train_top_layers):
            raise ValueError("encode_precision is an option of the cached runs (train_head_only, train_top_layers): "
                             "set one of them, or train the backbone in bfloat16 with bf16: true.")
        if self.head_layers < 1:
            raise ValueError(f"head_layers must be a positive integer, got {self.head_layers}.")
        if self.isotropic_head and not self.train_head_only:
            raise ValueError("isotropic_head is a head-only option: set train_head_only true.")
        if self.isotropic_head and self.head_layers > 1:
            raise ValueError("isotropic_head is one whitening and one orthonormal Dense: leave head_layers at 1.")
        if self.head_layers > 1 and not self.train_head_only:
            raise ValueError("head_layers > 1 is a head-only option: set train_head_only true (fine-tuning the "
                             "backbone trains the one-layer projection).")


@dataclass
class LossArguments:
    """The LeJEPA objective (see ``ragcun.LeJEPALoss``), or the cosine baseline it is compared with."""

    objective: str = option(
        "lejepa",
        "lejepa: ragcun's stack (projection, no Normalize, euclidean) with Euclidean MNRL + SIGReg. "
        "mnrl_gor: the base as released (cosine) with cosine MNRL + GlobalOrthogonalRegularization, "
        "the comparison baseline; the projection and lambda_* options are then unused.",
    )
    gor_weight: float = option(1.0, "mnrl_gor only: weight of both GOR terms.")
    cosine_scale: float = option(20.0, "mnrl_gor only: MNRL logit scale on cosine.")
    lambda_contrastive: float = option(1.0, "Weight of the Euclidean MNRL term.")
    lambda_isotropy: float = option(0.01, "Weight of SIGReg.")
    num_slices: int = option(1024, "Random directions per SIGReg step.")
    num_principal: int | None = option(
        0,
        "SIGReg's principal directions (eigenvectors of a running second moment of earlier "
        "embeddings, the most departing first), tested on the batch plus the cross-batch memory. "
        "0 (default): off, random slices only, as LeJEPA and the recommended recipes; null: all of them.",
    )
    memory_size: int = option(
        0,
        "SIGReg cross-batch memory: past steps' embeddings the principal slices are also tested on "
        "(0: off). Sharper detection in small batches, but stale once the model moves (see SIGReg).",
    )
    memory_max_age: int = option(4, "Steps an embedding may stay in SIGReg's memory.")
    principal_horizon: int | None = option(
        None,
        "Embeddings the principal directions are estimated over; unset: 2 x dim.",
    )
    principal_refresh: int = option(1, "Steps between re-estimates of the principal directions.")
    isotropy_by_role: bool = option(
        False,
        "SIGReg on the queries (anchor column) and on the documents (the other columns) apart, the mean of the "
        "two, instead of on their union: each role is pushed to N(0, I) on its own, which also closes the gap "
        "between the two roles' means.",
    )
    mnrl_scale: float = option(1.0, "Logit scale per unit of L2 distance.")
    whiten_in_loss: bool = option(
        True,
        "train_top_layers: whiten every batch's embeddings (queries and documents together; the batch's covariance "
        "shrunk toward a running estimate, gradients through it) before the ranking, SIGReg and anchor terms, so "
        "the encoder learns to make the whitened space rank well. false: the terms see the projection's output.",
    )
    lambda_anchor: float = option(
        0.0,
        "train_head_only, train_top_layers: weight of the anchor to the base's ranking, the KL divergence from the "
        "base's in-batch ranking to the model's, both as MNRL scores (logged as `anchor`). 0: off.",
    )
    anchor_scale: float | None = option(
        None,
        "The factor bringing the base's unit vectors to the model's units for the anchor; unset: "
        "the scaled init's (unit average variance on the training embeddings).",
    )
    gradcache_mini_batch_size: int | None = option(
        None,
        "Use CachedLeJEPALoss (GradCache) with this mini-batch size: large batches in small memory.",
    )

    def sigreg_kwargs(self) -> dict[str, Any]:
        return {"num_slices": self.num_slices, "num_principal": self.num_principal, "memory_size": self.memory_size,
                "memory_max_age": self.memory_max_age, "principal_horizon": self.principal_horizon,
                "principal_refresh": self.principal_refresh}

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}.")
        if self.gor_weight < 0:
            raise ValueError(f"gor_weight must be >= 0, got {self.gor_weight}.")
        for name in ("lambda_contrastive", "lambda_isotropy"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}. Use 0 to switch that term off.")
        if self.lambda_contrastive == 0 and self.lambda_isotropy == 0:
            raise ValueError("lambda_contrastive and lambda_isotropy are both 0: nothing would be trained.")
        if self.lambda_anchor < 0:
            raise ValueError(f"lambda_anchor must be >= 0, got {self.lambda_anchor}. Use 0 to switch it off.")
        if self.anchor_scale is not None and self.anchor_scale <= 0:
            raise ValueError(f"anchor_scale must be positive, got {self.anchor_scale}.")
        # SIGReg checks its own settings, with the messages a user of the loss gets too
        SIGReg(**self.sigreg_kwargs())
        if self.gradcache_mini_batch_size is not None and self.gradcache_mini_batch_size < 1:
            raise ValueError(f"gradcache_mini_batch_size must be positive, got {self.gradcache_mini_batch_size}.")


@dataclass
class DataArguments:
    """Where the triplets come from, and the held-out sample watched during training."""

    train_data: list[str] = option(
        help="Training sources: local files/globs/BEIR folders or Hub dataset ids. In a recipe, an entry "
        "may also be a mapping of ragcun.training.data.DataSource fields (path, split, columns, max_samples, ...).",
        factory=list,
    )
    max_samples: int | None = option(None, "Cap on training rows after mixing the sources.")
    eval_size: int = option(200, "Held-out rows (split by query, so no query leaks).")
    eval_metric: str = option("mrr@10", "Primary figure of the held-out evaluator.")
    mine_hard_negatives: int = option(
        0,
        "Give every training row this many hard negatives (at least): each source keeps its own, "
        "and the empty slots (pair-only sources) are mined from the frozen base's ranking of the training "
        "documents (sentence-transformers' mine_hard_negatives). 0: off, and mixing triplets with pairs "
        "drops the triplets' negatives.",
    )
    mine_range_min: int = option(3, "Mining skips each query's nearest N candidates (often unlabelled positives).")
    mine_relative_margin: float | None = option(
        0.05,
        "Mining skips candidates the base scores within this fraction of the positive's score.",
    )
    overwrite_output_dir: bool = option(
        False,
        "Allow writing into an output_dir that already holds a model or checkpoints.",
    )

    def __post_init__(self) -> None:
        if self.eval_size < 0:
            raise ValueError(f"eval_size must be >= 0, got {self.eval_size}.")
        if self.max_samples is not None and self.max_samples <= 0:
            raise ValueError(f"max_samples must be positive, got {self.max_samples}.")
        if self.mine_hard_negatives < 0:
            raise ValueError(f"mine_hard_negatives must be >= 0 (0: off), got {self.mine_hard_negatives}.")
        if self.mine_range_min < 0:
            raise ValueError(f"mine_range_min must be >= 0, got {self.mine_range_min}.")
        if self.mine_relative_margin is not None and not 0 <= self.mine_relative_margin < 1:
            raise ValueError(f"mine_relative_margin must be in [0, 1) or null, got {self.mine_relative_margin}.")


RECIPE_DATACLASSES = (ModelArguments, LossArguments, DataArguments, SentenceTransformerTrainingArguments)


@dataclass
class Recipe:
    model: ModelArguments
    loss: LossArguments
    data: DataArguments
    training: SentenceTransformerTrainingArguments
    resolved: dict[str, Any]  # the YAML with the command-line overrides applied, as the run used it
    given: frozenset[str] = frozenset()  # the keys the YAML or the command line set (the rest are defaults)


def _valid_keys() -> set[str]:
    return {f.name for dataclass_type in RECIPE_DATACLASSES for f in fields(dataclass_type) if f.init}


def _refuse_unknown(keys: list[str], where: str) -> None:
    valid = _valid_keys()
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            label = f"option --{key}" if where == "option" else f"{where} {key!r}"
            raise ValueError(f"Unknown {label}.{hint} Run `python train.py --help` for every option.")


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {path} does not exist. Recipes live in recipes/, e.g. recipes/quickstart.yaml.")
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {path} must be a YAML mapping of option: value, got {type(recipe).__name__}.")
    return recipe


def parse_recipe(argv: list[str] | None = None, options: dict[str, Any] | None = None) -> Recipe:
    """``--config recipe.yaml`` (optional), then ``options`` (recipe keys as Python values, for callers of
    :func:`ragcun.train`), then ``--any_option value`` flags, each overriding the one before."""
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--config", default=None)
    known, overrides = pre_parser.parse_known_args(argv)
    recipe = load_recipe_file(known.config) if known.config else {}
    _refuse_unknown(list(recipe), "recipe key")
    _refuse_unknown(list(options or {}), "option")
    recipe.update(options or {})
    # HfArgumentParser accepts --some-option as well as --some_option
    flags = [token[2:].split("=", 1)[0].replace("-", "_") for token in overrides if token.startswith("--")]
    _refuse_unknown([flag for flag in flags if flag not in ("help",)], "option")

    parser = HfArgumentParser(RECIPE_DATACLASSES)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # Several processes and no GPU (`accelerate launch --multi_gpu` or torchrun on a CPU machine): without
        # use_cpu the trainer would not set up gloo and each process would silently train alone.
        parser.set_defaults(use_cpu=True)
    parser.set_defaults(**recipe)
    model_args, loss_args, data_args, training_args = parser.parse_args_into_dataclasses(args=overrides)
    parsed = {}
    for instance in (model_args, loss_args, data_args, training_args):
        parsed.update({f.name: getattr(instance, f.name) for f in fields(instance) if f.init})
    resolved = {**recipe, **{flag: parsed[flag] for flag in flags if flag in parsed}}
    # ragcun's own options are written out in full, so a re-run does not depend on today's defaults
    for instance in (model_args, loss_args, data_args):
        resolved.update({f.name: getattr(instance, f.name) for f in fields(instance)})
    resolved.setdefault("output_dir", training_args.output_dir)
    given = frozenset(recipe) | frozenset(flags)
    if training_args.metric_for_best_model and "greater_is_better" not in given:
        # transformers guesses "greater is better" for every name but *loss; the held-out figures say their own way
        training_args.greater_is_better = greater_is_better(training_args.metric_for_best_model)
        resolved["greater_is_better"] = training_args.greater_is_better
    return Recipe(model_args, loss_args, data_args, training_args, resolved, given)
