"""Mixing sources into one training set, and the held-out split made by anchor."""

from __future__ import annotations

import logging

import pyarrow as pa
from datasets import Dataset, concatenate_datasets

from ragcun.training.data.columns import load_source
from ragcun.training.data.roles import negative_columns
from ragcun.training.data.sources import Sources, resolve_all

logger = logging.getLogger(__name__)


def _split_by_anchor(data: Dataset, eval_rows: int) -> tuple[Dataset, Dataset]:
    """Hold out whole anchors, so that no query is both trained on and evaluated on.

    Anchors are taken from the end of the (shuffled) order until ``eval_rows`` rows are held out;
    the last anchor taken may have more rows than needed: its extra rows go to neither split
    (they would leak into training), so the evaluation set has exactly ``eval_rows`` rows.
    """
    anchors = data.with_format("arrow")["anchor"].to_pylist()
    groups: dict[str, list[int]] = {}
    for index, anchor in enumerate(anchors):
        groups.setdefault(anchor, []).append(index)
    if len(groups) < 2:
        raise ValueError("A held-out split needs at least 2 distinct anchors; the data has only one.")
    eval_indices: list[int] = []
    held_out: set[str] = set()
    for anchor in reversed(list(groups)):
        if len(eval_indices) >= eval_rows:
            break
        held_out.add(anchor)
        eval_indices.extend(groups[anchor][: eval_rows - len(eval_indices)])
    train_indices = [index for index, anchor in enumerate(anchors) if anchor not in held_out]
    if not train_indices:
        raise ValueError(
            f"Holding out {eval_rows} rows takes every anchor ({len(groups)} distinct), leaving nothing to train on. "
            "Lower eval_size / eval_fraction."
        )
    discarded = len(anchors) - len(train_indices) - len(eval_indices)
    if discarded:
        logger.info(
            "Held-out split: %d rows of the last held-out anchor are in neither split (no anchor overlap).", discarded
        )
    return data.select(train_indices), data.select(sorted(eval_indices))


def _pad_negatives(dataset: Dataset, count: int) -> Dataset:
    """Add empty (None) negative columns up to ``count``: slots to be mined, never trained on as they are."""
    for name in negative_columns(count)[len(dataset.column_names) - 2:]:
        dataset = dataset.add_column(name, pa.array([None] * len(dataset), pa.string()))
    return dataset


def _check_numbers(max_samples: int | None, eval_fraction: float, eval_size: int | None) -> None:
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples <= 0
    ):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}.")
    if not isinstance(eval_fraction, (int, float)) or isinstance(eval_fraction, bool) or not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}: it is the share of rows held out.")
    if eval_size is not None and (isinstance(eval_size, bool) or not isinstance(eval_size, int) or eval_size < 0):
        raise ValueError(f"eval_size must be a non-negative integer or None, got {eval_size!r}.")
    if eval_size and eval_fraction:
        raise ValueError(f"Give eval_size ({eval_size}) or eval_fraction ({eval_fraction}), not both.")


def load_training_data(
    sources: Sources,
    *,
    max_samples: int | None = None,
    seed: int = 0,
    shuffle: bool = True,
    eval_fraction: float = 0.0,
    eval_size: int | None = None,
    pad_negatives: bool = False,
) -> tuple[Dataset, Dataset | None]:
    """Load, normalise and mix the sources into (train, held-out eval or None).

    Columns are ``anchor``, ``positive`` and the negatives all sources share: a mix of triplets and
    pairs gives pairs, with a warning, unless ``pad_negatives``, which keeps every source's negatives
    and leaves the missing ones None, for :func:`ragcun.training.hard_negatives.mine_missing_negatives` to
    fill. Order: concatenate, shuffle with ``seed``, keep the first
    ``max_samples`` rows, then hold out ``eval_size`` rows (else ``round(eval_fraction * N)``).
    The held-out split is made by anchor text, never by row: datasets such as the TREC DL
    triplets repeat each query dozens of times, and a row split would put the same query in both
    halves.
    """
    _check_numbers(max_samples, eval_fraction, eval_size)
    resolved = resolve_all(sources)

    parts = [(item.source.label, load_source(item)) for item in resolved]
    counts = {label: len(dataset.column_names) - 2 for label, dataset in parts}
    keep = max(counts.values()) if pad_negatives else min(counts.values())
    if pad_negatives and min(counts.values()) < keep:
        logger.info("Keeping every source's negatives (%s); the %s missing in the others are mined.",
                    ", ".join(f"{label}: {count}" for label, count in counts.items()), keep)
        parts = [(label, _pad_negatives(dataset, keep)) for label, dataset in parts]
    elif keep < max(counts.values()):
        dropped = {label: count - keep for label, count in counts.items() if count > keep}
        logger.warning(
            "The sources have different numbers of negative columns (%s); keeping %d in all, so %s dropped "
            "(from %s). Set mine_hard_negatives to keep them and mine negatives for the others.",
            ", ".join(f"{label}: {count}" for label, count in counts.items()), keep,
            f"{max(dropped.values())} negative column(s) were", ", ".join(dropped),
        )
    names = ["anchor", "positive", *negative_columns(keep)]
    datasets_ = [dataset.select_columns(names) for _, dataset in parts]
    data = datasets_[0] if len(datasets_) == 1 else concatenate_datasets(datasets_)
    if shuffle:
        data = data.shuffle(seed=seed)
    if max_samples is not None and max_samples < len(data):
        data = data.select(range(max_samples))

    total = len(data)
    eval_rows = eval_size if eval_size else (max(1, round(eval_fraction * total)) if eval_fraction else 0)
    if not eval_rows:
        return data, None
    if eval_rows >= total:
        raise ValueError(
            f"A held-out split of {eval_rows} rows leaves nothing to train on ({total} rows in all). "
            "Lower eval_size / eval_fraction, or add data."
        )
    train, held_out = _split_by_anchor(data, eval_rows)
    logger.info("Training rows: %d; held-out rows: %d (split by anchor).", len(train), len(held_out))
    return train, held_out
