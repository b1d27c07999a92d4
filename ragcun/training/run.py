"""run_training(recipe): data → model → LeJEPA loss → SentenceTransformerTrainer → saved model + summary.

No hand-written loop: the trainer (accelerate underneath) owns batching, distribution, logging,
checkpoints and resumption. This module wires ragcun's parts into it and writes what a user needs
afterwards: the plain-loadable model, the resolved recipe and ``training_summary.json``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from datasets import Dataset, load_from_disk
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ragcun.encoding.cache import DEFAULT_CACHE_DIR
from ragcun.encoding.precision import resolve_precision
from ragcun.io import atomic_write_text, write_folder_atomically
from ragcun.isotropy import isotropy_figures
from ragcun.losses import CachedLeJEPALoss, LeJEPALoss, MNRLGORLoss
from ragcun.model import build_model, freeze, load_base, resolve_base, unit_variance_scale
from ragcun.training import head as head_training
from ragcun.training import top as top_training
from ragcun.training.data import DataSource, load_training_data, validate_sources
from ragcun.training.hard_negatives import mine_missing_negatives
from ragcun.training.monitor import LOGGED_ISOTROPY, IsotropyRetrievalEvaluator, SIGRegStepCallback
from ragcun.training.recipe import LossArguments, ModelArguments, Recipe

logger = logging.getLogger(__name__)
# the held-out figures the summary prints, by name from those the monitor logs
SUMMARY_FIGURES = ("mrr@10", "recall@10", *isotropy_figures(
    "mean_norm", "mean_norm_excess", "variance_mean", "variance_min", "variance_max", "cov_identity_fro",
    "cov_identity_fro_floor", "mean_abs_offdiag_corr", "offdiag_corr_excess", "sigreg", "is_isotropic",
    "marginal_ep_max", "marginal_ep_max_floor", "norm_ks", "is_gaussian",
    among=LOGGED_ISOTROPY))


def _plain(value: Any) -> Any:
    """YAML/JSON-safe copy: enums to their values, paths to strings."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _is_complete_checkpoint(folder: Path) -> bool:
    """The trainer writes trainer_state.json last: a run killed mid-save leaves a folder without a valid one."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint-N in output_dir that was written to the end, skipping one cut off by a kill.

    transformers' ``get_last_checkpoint`` picks the newest folder by name alone, so after a kill during a save it
    would resume from the half-written one; this walks the same folders newest first and checks each."""
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    folders = [p for p in output_dir.glob(f"{prefix}*") if p.is_dir() and p.name[len(prefix):].isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name[len(prefix):]), reverse=True):
        if _is_complete_checkpoint(folder):
            return str(folder)
        logger.warning("Skipping %s: it was not written to the end (the run was likely killed while saving).", folder)
    return None


def _resume_target(value: Any, output_dir: Path) -> str | None:
    """``--resume_from_checkpoint true`` means the newest complete checkpoint in output_dir; a path means that one."""
    if value in (None, False) or str(value).lower() in ("", "false", "none", "no"):
        return None
    if str(value).lower() in ("true", "last", "yes"):
        last = last_complete_checkpoint(output_dir) if output_dir.is_dir() else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint: no complete checkpoint-* folder in {output_dir} to resume from.")
        return last
    if not Path(value).is_dir() or not _is_complete_checkpoint(Path(value)):
        raise ValueError(
            f"--resume_from_checkpoint: {value} is not a complete checkpoint folder (no valid trainer_state.json). "
            "Pass --resume_from_checkpoint true to take the newest complete one."
        )
    return str(value)


@dataclass
class PreparedRun:
    """What is known before any model is loaded: the checked sources, the data, where to resume."""

    train_dataset: Dataset
    eval_dataset: Dataset | None
    resume: str | None


def prepare_run(recipe: Recipe) -> PreparedRun:
    """Check the recipe, the output dir and the data before any model is loaded.

    Every bad input (missing file, misnamed columns, empty data, occupied output dir) fails here, in
    seconds, with nothing on disk touched.
    """
    sources, resume = check_before_loading(recipe)
    train_dataset, eval_dataset = load_training_data(
        sources, max_samples=recipe.data.max_samples, seed=recipe.training.seed, eval_size=recipe.data.eval_size or None,
        pad_negatives=recipe.data.mine_hard_negatives > 0,
    )
    return PreparedRun(train_dataset, eval_dataset, resume)


def check_before_loading(recipe: Recipe) -> tuple[list[DataSource], str | None]:
    """Every check that needs no model and no data loading, so mistakes cost seconds, not minutes."""
    if not recipe.data.train_data:
        raise ValueError("No training data: set train_data in the recipe or pass --train_data FILE [FILE ...].")
    sources = validate_sources(recipe.data.train_data)
    output_dir = Path(recipe.training.output_dir)
    resume = _resume_target(recipe.training.resume_from_checkpoint, output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and resume is None and not recipe.data.overwrite_output_dir:
        raise ValueError(
            f"output_dir {output_dir} already holds files (a model or checkpoints). Pass --resume_from_checkpoint true "
            "to continue that run, --overwrite_output_dir true to write over it, or choose another --output_dir."
        )
    given = {key: recipe.resolved.get(key) for key in recipe.given}
    defaults = {f.name: f.default for dc in (ModelArguments, LossArguments) for f in dataclasses.fields(dc)}
    if recipe.model.train_head_only:
        head_training.check_head_only_recipe(given, defaults)
        if recipe.loss.objective != "lejepa":
            raise ValueError(f"train_head_only trains ragcun's head with the lejepa objective; objective "
                             f"{recipe.loss.objective!r} keeps the base's own head. Use one or the other.")
        if "prompts" in recipe.given:
            raise ValueError("train_head_only encodes with the base's own query/document prompts; a recipe `prompts` "
                             "mapping is not supported with it. Remove `prompts`.")
    elif recipe.model.train_top_layers:
        clash = sorted(key for key in ("freeze_layers", "freeze_embeddings", "init") if key in given
                       and given[key] != defaults[key])
        if clash:
            raise ValueError(f"train_top_layers chooses what trains (the top k layers) and starts the projection on "
                             f"the base's principal axes, but the recipe also sets {', '.join(clash)}. Remove them.")
        if recipe.loss.objective != "lejepa" or recipe.loss.gradcache_mini_batch_size:
            raise ValueError("train_top_layers trains with the lejepa objective and LeJEPALoss (no GradCache): remove "
                             "objective and gradcache_mini_batch_size.")
        if "prompts" in recipe.given:
            raise ValueError("train_top_layers caches the texts with the base's own query/document prompts; a recipe "
                             "`prompts` mapping is not supported with it. Remove `prompts`.")
    elif recipe.loss.lambda_anchor > 0:
        raise ValueError("lambda_anchor keeps the frozen base's ranking and needs train_head_only or "
                         "train_top_layers: fine-tuning the whole backbone has no frozen copy of the base to distil "
                         "from. Set one of them, or lambda_anchor 0.")
    # set away from its default (a recipe an earlier run wrote out lists every key at its value)
    if "whiten_in_loss" in recipe.given and not recipe.loss.whiten_in_loss and not recipe.model.train_top_layers:
        raise ValueError("whiten_in_loss applies to train_top_layers runs only: remove it, or set train_top_layers.")
    if recipe.loss.lambda_isotropy > 0 and recipe.training.per_device_train_batch_size < 2:
        raise ValueError("SIGReg needs a batch of at least 2: raise per_device_train_batch_size.")
    return sources, resume


def _init_texts(train_dataset, count: int, seed: int) -> dict[str, list[str]]:
    """A sample of the training texts, queries with the query prompt and passages with the document prompt."""
    anchors = list(dict.fromkeys(train_dataset["anchor"]))
    passages = list(dict.fromkeys(t for column in train_dataset.column_names[1:] for t in train_dataset[column]))
    rng = random.Random(seed)
    rng.shuffle(anchors)
    rng.shuffle(passages)
    half = count // 2
    return {"query": anchors[:half], "document": passages[: count - min(half, len(anchors))]}


def _column_prompts(model: SentenceTransformer, columns: list[str]) -> dict[str, str] | None:
    """Train with the prompts the model will be used with: query prompt on anchors, document prompt elsewhere."""
    if "query" not in model.prompts or "document" not in model.prompts:
        return None
    return {column: model.prompts["query" if column == "anchor" else "document"] for column in columns}


def _complete_rows(dataset: Dataset) -> Dataset:
    """The held-out rows as the trainer's eval loss needs them: without the negative columns a source left empty
    (pairs mixed with triplets; the held-out evaluator still uses the negatives that exist)."""
    empty = [c for c in dataset.column_names[2:] if None in dataset[c]]
    return dataset.remove_columns(dataset.column_names[2:]) if empty else dataset


def _heldout_evaluator(eval_dataset, metric: str) -> IsotropyRetrievalEvaluator | None:
    if eval_dataset is None or len(eval_dataset) == 0:
        return None
    queries, positives = eval_dataset["anchor"], eval_dataset["positive"]
    extra = [t for column in eval_dataset.column_names[2:] for t in eval_dataset[column] if t is not None]
    return IsotropyRetrievalEvaluator(queries, positives, extra_documents=extra, name="heldout", primary_metric=metric)


def _cosine_baseline(base: SentenceTransformer, model_args) -> SentenceTransformer:
    """The base as released (its Normalize and cosine kept), frozen and truncated like the ragcun stack, so
    that the MNRL + GOR baseline differs from ragcun only in the objective and the head."""
    freeze(base, model_args.freeze_layers, model_args.freeze_embeddings)
    if model_args.max_seq_length is not None:
        base.max_seq_length = model_args.max_seq_length
    return base


def _mine(recipe: Recipe, train_dataset: Dataset, ranker: SentenceTransformer) -> Dataset:
    """Fill the empty negative slots from the frozen base's ranking (no-op unless mine_hard_negatives is set)."""
    data_args, args = recipe.data, recipe.training
    if not data_args.mine_hard_negatives:
        return train_dataset
    if args.world_size == 1:
        return mine_missing_negatives(train_dataset, ranker, data_args.mine_hard_negatives,
                                      range_min=data_args.mine_range_min,
                                      relative_margin=data_args.mine_relative_margin,
                                      batch_size=args.per_device_eval_batch_size)
    # several processes: the main one mines and saves, the others load exactly its rows (same data everywhere)
    saved = Path(args.output_dir) / "mined-training-data"
    with args.main_process_first(desc="mining hard negatives"):
        if args.process_index == 0:
            mined = mine_missing_negatives(train_dataset, ranker, data_args.mine_hard_negatives,
                                           range_min=data_args.mine_range_min,
                                           relative_margin=data_args.mine_relative_margin,
                                           batch_size=args.per_device_eval_batch_size)
            shutil.rmtree(saved, ignore_errors=True)
            mined.save_to_disk(str(saved))
        return load_from_disk(str(saved))


def _cached_text_groups(mode: str, base: SentenceTransformer, train_dataset: Dataset,
                        eval_dataset: Dataset | None) -> head_training.TextGroups:
    """What a cached run (head-only, top layers) computes once per text: the training columns with the prompt each is
    trained with (query on anchors, document elsewhere, where the base has both), the held-out ones as evaluated."""
    base.eval()
    prompts = dict(base.prompts)
    if base.default_prompt_name and not {"query", "document"} <= set(prompts):
        raise ValueError(f"{mode} needs a base with both query and document prompts, or no default prompt: this one "
                         f"has default_prompt_name {base.default_prompt_name!r} and prompts {sorted(prompts)}.")
    column_prompts = ({column: "query" if column == "anchor" else "document" for column in train_dataset.column_names}
                      if {"query", "document"} <= set(prompts) else None)
    return head_training.text_groups(train_dataset, eval_dataset, column_prompts, prompts)


@dataclass
class HeadOnlySetup:
    model: SentenceTransformer  # the cached lookup, then the head
    base: SentenceTransformer  # the cached lookup alone, ranking as the base does (its figures without encoding)
    train_dataset: Dataset  # with the mined negatives
    base_scale: float  # what brings the base's unit vectors to unit average variance (the scaled init's factor)


def _head_only_model(base: SentenceTransformer, base_path: str, recipe: Recipe, train_dataset, eval_dataset,
                     resume: str | None) -> HeadOnlySetup:
    """Encode every text once with the frozen base (main process first; the others read the cache), mine the
    missing hard negatives from those embeddings, then the lookup + head model the trainer trains (see
    :mod:`ragcun.training.head`)."""
    model_args, args = recipe.model, recipe.training
    groups = _cached_text_groups("train_head_only", base, train_dataset, eval_dataset)
    cache_dir = Path(model_args.embedding_cache_dir or DEFAULT_CACHE_DIR)
    base_path = str(Path(base_path).expanduser())
    precision = resolve_precision(model_args.encode_precision, base.device.type)
    print(f"frozen base encodes in {precision}", flush=True)
    if args.world_size > 1:
        # each process encodes its share of the shards; all of them are on disk before the main process joins them
        head_training.encode_own_shards(base, base_path, groups, cache_dir, args.per_device_eval_batch_size,
                                        args.process_index, args.world_size, precision, model_args.base_revision)
        torch.distributed.barrier()
    with args.main_process_first(desc="joining the frozen base's embeddings"):
        encoded = head_training.encode_once(base, base_path, groups, cache_dir,
                                            batch_size=args.per_device_eval_batch_size, precision=precision,
                                            revision=model_args.base_revision)
    if resume is not None:
        head_training.check_same_table(Path(resume), encoded)
    lookup = head_training.lookup_model(base, encoded)
    train_dataset = _mine(recipe, train_dataset, lookup)
    train_embeddings = encoded.read()[0][encoded.train_rows]
    if model_args.isotropic_head:
        head = head_training.build_isotropic_head(train_embeddings, model_args.output_dim)
    else:
        head = head_training.build_head(train_embeddings, model_args.output_dim, model_args.init, args.seed,
                                        samples=model_args.init_samples, layers=model_args.head_layers)
    # the table is a buffer: DDP must not broadcast it to every process before every forward
    args.ddp_broadcast_buffers = False
    base_scale = unit_variance_scale(train_embeddings, model_args.output_dim)
    return HeadOnlySetup(head_training.training_model(base, encoded, head), lookup, train_dataset, base_scale)


def _save_model_atomically(model: SentenceTransformer, final_dir: Path) -> None:
    """Write beside, then swap: a crash mid-save leaves the previous final model intact."""
    write_folder_atomically(final_dir, lambda staging: model.save(str(staging)))
    for leftover in (final_dir.with_name(f".{final_dir.name}.tmp"), final_dir.with_name(f".{final_dir.name}.old")):
        shutil.rmtree(leftover, ignore_errors=True)  # the names earlier versions staged under


@dataclass
class ModelSetup:
    """What a training mode hands the shared part of the run: the model the trainer trains and what goes with it."""

    model: SentenceTransformer
    train_dataset: Dataset  # with mined negatives, where the recipe mines
    base_metrics: dict[str, Any]  # the held-out figures of the base as released (empty without held-out rows)
    save: Callable[[], SentenceTransformer]  # the model written to output_dir/final once trained
    loss_extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # mode-specific LeJEPALoss arguments
    callbacks: list[TrainerCallback] = dataclasses.field(default_factory=list)
    # the model the trained held-out figures are read from, where it is not the trained model itself
    heldout_model: Callable[[], SentenceTransformer] | None = None


def _head_only_mode(recipe: Recipe, base: SentenceTransformer, base_path: str, prepared: PreparedRun,
                    evaluator: IsotropyRetrievalEvaluator | None) -> ModelSetup:
    """The frozen base's cached embeddings under a trained head (see :mod:`ragcun.training.head`)."""
    setup = _head_only_model(base, base_path, recipe, prepared.train_dataset, prepared.eval_dataset, prepared.resume)
    loss_extras: dict[str, Any] = {}
    if recipe.loss.lambda_anchor > 0:  # the cached lookup is the frozen base
        loss_extras = dict(lambda_anchor=recipe.loss.lambda_anchor, anchor_model=setup.model[0],
                           anchor_scale=recipe.loss.anchor_scale or setup.base_scale)
    callbacks = [head_training.OrthonormalRows(setup.model[-1])] if recipe.model.isotropic_head else []
    # the base's own figures, read from the cached embeddings (the same vectors, no encoding)
    base_metrics = evaluator(setup.base) if evaluator is not None else {}
    return ModelSetup(setup.model, setup.train_dataset, base_metrics, lambda: head_training.assemble(base, setup.model),
                      loss_extras, callbacks)


def _backbone_mode(recipe: Recipe, base: SentenceTransformer, base_path: str, prepared: PreparedRun,
                   evaluator: IsotropyRetrievalEvaluator | None) -> ModelSetup:
    """ragcun's stack on the base (projection, no Normalize, euclidean), its top layers fine-tuned."""
    model_args = recipe.model
    base_metrics = evaluator(base) if evaluator is not None else {}  # the base as released, before it changes
    train_dataset = _mine(recipe, prepared.train_dataset, base)  # the base as released ranks the training documents
    init_texts = None if model_args.init == "random" else _init_texts(train_dataset, model_args.init_samples,
                                                                      recipe.training.seed)
    model = build_model(base, output_dim=model_args.output_dim, init=model_args.init, init_texts=init_texts,
                        freeze_layers=model_args.freeze_layers, freeze_embeddings=model_args.freeze_embeddings,
                        max_seq_length=model_args.max_seq_length, seed=recipe.training.seed)
    return ModelSetup(model, train_dataset, base_metrics, lambda: model)


def _cosine_baseline_mode(recipe: Recipe, base: SentenceTransformer, base_path: str, prepared: PreparedRun,
                          evaluator: IsotropyRetrievalEvaluator | None) -> ModelSetup:
    """The comparison baseline: the base as released (cosine), fine-tuned with MNRL + GOR."""
    base_metrics = evaluator(base) if evaluator is not None else {}
    train_dataset = _mine(recipe, prepared.train_dataset, base)
    model = _cosine_baseline(base, recipe.model)
    return ModelSetup(model, train_dataset, base_metrics, lambda: model)


def _top_layers_mode(recipe: Recipe, base: SentenceTransformer, base_path: str, prepared: PreparedRun,
                     evaluator: IsotropyRetrievalEvaluator | None) -> ModelSetup:
    """The encoder's top layers trained from cached states, whitened inside the loss (:mod:`ragcun.training.top`)."""
    model_args, args = recipe.model, recipe.training
    groups = _cached_text_groups("train_top_layers", base, prepared.train_dataset, prepared.eval_dataset)
    precision = resolve_precision(model_args.encode_precision, base.device.type)
    print(f"frozen layers encode in {precision}", flush=True)
    with args.main_process_first(desc="caching the frozen layers' states"):
        setup = top_training.build(base, str(Path(base_path).expanduser()), groups, model_args.train_top_layers,
                                   model_args.output_dim, Path(model_args.embedding_cache_dir or DEFAULT_CACHE_DIR),
                                   precision, model_args.base_revision, args.per_device_eval_batch_size)
    lookup = head_training.lookup_model(base, setup.encoded)
    comparison = Path(args.output_dir) / "whitened-base"
    if args.process_index == 0 and not (comparison / "modules.json").is_file():
        whitened = top_training.whitened_base(base, setup)
        _save_model_atomically(whitened, comparison)
        if evaluator is not None:  # its held-out figures, from the cached base embeddings (no encoding)
            figures = evaluator(SentenceTransformer(modules=[*lookup, whitened[-1]], similarity_fn_name="euclidean",
                                                   prompts=dict(base.prompts), device="cpu"))
            atomic_write_text(comparison / "heldout_metrics.json", json.dumps(_plain(figures), indent=2) + "\n")
    train_dataset = _mine(recipe, prepared.train_dataset, lookup)
    loss_extras: dict[str, Any] = {"whitening": setup.whitening} if recipe.loss.whiten_in_loss else {}
    if recipe.loss.lambda_anchor > 0:
        # the lookup table holds the full base's embedding of each cached row, in the states' order
        loss_extras.update(lambda_anchor=recipe.loss.lambda_anchor, anchor_model=lookup[0],
                           anchor_scale=recipe.loss.anchor_scale or setup.base_scale)
    base_metrics = evaluator(lookup) if evaluator is not None else {}
    finished: dict[str, Any] = {}

    def final_whitening():  # fitted once, after training: for the held-out figures and the saved model alike
        if "dense" not in finished:
            finished["dense"] = top_training.final_whitening(setup.model, groups, args.per_device_eval_batch_size,
                                                             model_args.whitening_fit_texts, args.seed)
        return finished["dense"]

    return ModelSetup(setup.model, train_dataset, base_metrics,
                      lambda: top_training.assemble(base, setup.model, final_whitening()), loss_extras,
                      heldout_model=lambda: top_training.cached_view(setup.model, final_whitening()))


TRAINING_MODES = {"head_only": _head_only_mode, "top_layers": _top_layers_mode, "backbone": _backbone_mode,
                  "cosine_baseline": _cosine_baseline_mode}


def training_mode(recipe: Recipe) -> str:
    """Which of :data:`TRAINING_MODES` a recipe asks for."""
    if recipe.model.train_head_only:
        return "head_only"
    if recipe.model.train_top_layers:
        return "top_layers"
    return "cosine_baseline" if recipe.loss.objective == "mnrl_gor" else "backbone"


def _loss(recipe: Recipe, setup: ModelSetup) -> torch.nn.Module:
    loss_args = recipe.loss
    if loss_args.objective == "mnrl_gor":
        return MNRLGORLoss(setup.model, scale=loss_args.cosine_scale, gor_weight=loss_args.gor_weight)
    loss_kwargs = dict(lambda_contrastive=loss_args.lambda_contrastive, lambda_isotropy=loss_args.lambda_isotropy,
                       scale=loss_args.mnrl_scale, seed=recipe.training.seed,
                       isotropy_by_role=loss_args.isotropy_by_role, **loss_args.sigreg_kwargs(), **setup.loss_extras)
    if loss_args.gradcache_mini_batch_size:
        return CachedLeJEPALoss(setup.model, mini_batch_size=loss_args.gradcache_mini_batch_size, **loss_kwargs)
    return LeJEPALoss(setup.model, **loss_kwargs)


def _load_base(recipe: Recipe, prepared: PreparedRun) -> tuple[SentenceTransformer, str]:
    """The base model and where it was loaded from (a tiny one built from a config when the recipe says so)."""
    model_args, args = recipe.model, recipe.training
    base_model = resolve_base(model_args.base_model)
    if model_args.tiny_base:
        from ragcun.tiny_model import build_tiny_gemma

        tiny_dir = Path(args.output_dir) / "tiny-base"
        with args.main_process_first(desc="building the tiny base"):
            if not (tiny_dir / "modules.json").is_file():
                texts = [t for dataset in (prepared.train_dataset, prepared.eval_dataset) if dataset is not None
                         for column in dataset.column_names for t in dataset[column] if t is not None]
                build_tiny_gemma(tiny_dir, texts, hidden_size=model_args.tiny_hidden_size,
                                 num_layers=model_args.tiny_num_layers, seed=args.seed)
        base_model = str(tiny_dir)
    base = load_base(base_model, revision=model_args.base_revision)
    if (model_args.train_head_only or model_args.train_top_layers) and model_args.max_seq_length is not None:
        base.max_seq_length = model_args.max_seq_length  # the base's own figures at the length the head sees
    return base, str(base_model)


def run_training(recipe: Recipe, prepared: PreparedRun | None = None) -> dict[str, Any]:
    """Train as the recipe says; returns the training summary (also written to output_dir).

    One entry for the three modes (:func:`training_mode`): each builds its model; the loss, the trainer, the
    summary and the saving are shared."""
    started = time.time()
    prepared = prepared or prepare_run(recipe)
    args, data_args = recipe.training, recipe.data
    output_dir = Path(args.output_dir)
    base, base_path = _load_base(recipe, prepared)
    evaluator = _heldout_evaluator(prepared.eval_dataset, data_args.eval_metric)
    setup = TRAINING_MODES[training_mode(recipe)](recipe, base, base_path, prepared, evaluator)
    model, train_dataset, eval_dataset, resume = setup.model, setup.train_dataset, prepared.eval_dataset, prepared.resume
    if args.prompts is None:
        args.prompts = _column_prompts(model, train_dataset.column_names)
    loss = _loss(recipe, setup)

    before = evaluator(model) if evaluator is not None else {}
    callbacks = list(setup.callbacks)
    if hasattr(loss, "sigreg"):
        callbacks.insert(0, SIGRegStepCallback(loss.sigreg, resume_from=resume))

    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=_complete_rows(eval_dataset) if evaluator is not None else None,
        loss=loss,
        evaluator=evaluator,
        callbacks=callbacks,
    )
    train_output = trainer.train(resume_from_checkpoint=resume)
    after = evaluator(setup.heldout_model() if setup.heldout_model else model) if evaluator is not None else {}

    summary: dict[str, Any] = {
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "wall_time_s": time.time() - started,
        "resumed_from": resume,
        "world_size": args.world_size,
        "num_train_rows": len(train_dataset),
        "num_eval_rows": 0 if eval_dataset is None else len(eval_dataset),
        "final_metrics": after,
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "base_metrics": setup.base_metrics,
        "isotropy_before": before,
        "isotropy_after": after,
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        _save_model_atomically(setup.save(), output_dir / "final")
        atomic_write_text(output_dir / "recipe.yaml", yaml.safe_dump(_plain(recipe.resolved), sort_keys=False))
        atomic_write_text(output_dir / "training_summary.json", json.dumps(_plain(summary), indent=2) + "\n")
        print_summary(summary, output_dir)
    return summary


def print_summary(summary: dict[str, Any], output_dir: Path) -> None:
    columns = {"base model": summary["base_metrics"], "step 0": summary["isotropy_before"],
               "trained": summary["isotropy_after"]}
    print(f"\nTrained {summary['global_step']} steps in {summary['wall_time_s']:.0f}s; model saved to {output_dir / 'final'}")
    if not all(columns.values()):
        return
    print("Held-out sample (queries and their documents kept out of training, together). N(0, I) means: "
          "mean_norm_excess ~ 0 (mean_norm itself ~ sqrt(D/N)), variance ~ 1, cov_identity_fro ~ its floor, "
          "offdiag_corr_excess ~ 0, sigreg ~ 1.05; is_isotropic judges each against N(0, I)'s own sampling spread.")
    print(f"{'figure':<28}" + "".join(f"{name:>14}" for name in columns))
    for figure in SUMMARY_FIGURES:
        key = f"heldout_{figure}"
        if all(key in values for values in columns.values()):
            print(f"{figure:<28}" + "".join(f"{values[key]:>14.4f}" for values in columns.values()))
    print(f"{'mean_abs_offdiag_corr_floor':<28}" + "".join(
        f"{values['heldout_mean_abs_offdiag_corr_floor']:>14.4f}" for values in columns.values()))
