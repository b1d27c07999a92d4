"""Hard negatives for rows that have none: mined from the frozen base's embeddings of the training pool.

Pair-only sources (SQuAD, Natural Questions, ...) give MNRL nothing but in-batch negatives, which are
easy: Euclidean MNRL falls to ~0 loss within a hundred steps once the triplets' hard negatives are
gone. Mixing pairs with triplets therefore keeps the triplets' own negatives (``pad_negatives``) and
fills the empty slots here with sentence-transformers' ``mine_hard_negatives``: for each query, the
training documents the base ranks highest, skipping its labelled positives, the nearest ``range_min``
candidates (often unlabelled positives) and any candidate scoring within ``relative_margin`` of the
positive. With head-only training the "model" is the cached lookup, so mining encodes nothing.
"""

from __future__ import annotations

import logging

import pyarrow as pa
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives

from ragcun.training.data import negative_columns

logger = logging.getLogger(__name__)


def documents(dataset: Dataset) -> list[str]:
    """Every distinct training document (positives, then negatives), the pool negatives are mined from."""
    pool: dict[str, None] = {}
    for column in dataset.column_names[1:]:
        pool.update(dict.fromkeys(text for text in dataset[column] if text is not None))
    return list(pool)


def mine_missing_negatives(
    dataset: Dataset,
    model: SentenceTransformer,
    count: int = 1,
    *,
    range_min: int = 3,
    relative_margin: float | None = 0.05,
    batch_size: int = 64,
) -> Dataset:
    """Every row with ``max(count, negative columns)`` negatives: its own first, mined ones in the empty slots.

    Rows for which not enough candidates pass the filters are dropped, and counted in the log. ``model``
    must rank like the base (cosine on normalized embeddings) and know the query/document prompts the
    training texts are encoded with.
    """
    if count < 1:
        raise ValueError(f"mine_hard_negatives must be a positive number of negatives per row, got {count}.")
    if range_min < 0:
        raise ValueError(f"mine_range_min must be >= 0, got {range_min}.")
    if relative_margin is not None and not 0 <= relative_margin < 1:
        raise ValueError(f"mine_relative_margin must be in [0, 1) or null, got {relative_margin}.")
    slots = negative_columns(max(count, len(dataset.column_names) - 2))
    for name in slots[len(dataset.column_names) - 2:]:
        dataset = dataset.add_column(name, pa.array([None] * len(dataset), pa.string()))
    rows = dataset.to_list()
    needy = {index for index, row in enumerate(rows) if any(row[name] is None for name in slots)}
    if not needy:
        return dataset
    # every row of a query that needs negatives, so that none of its labelled positives is mined as a negative
    anchors = {rows[i]["anchor"] for i in needy}
    pairs = Dataset.from_list([{"anchor": row["anchor"], "positive": row["positive"]} for row in rows
                               if row["anchor"] in anchors])
    mined = mine_hard_negatives(
        pairs, model, corpus=documents(dataset), range_min=range_min, relative_margin=relative_margin,
        num_negatives=len(slots), sampling_strategy="top", output_format="n-tuple", batch_size=batch_size,
        faiss_batch_size=1024, verbose=False,
    )
    found: dict[tuple[str, str], list[str]] = {}
    for row in mined.to_list():
        found[(row["anchor"], row["positive"])] = [row[name] for name in mined.column_names[2:]]
    kept, dropped = [], 0
    for index, row in enumerate(rows):
        if index in needy:
            own = [row[name] for name in slots if row[name] is not None]
            fill = [text for text in found.get((row["anchor"], row["positive"]), []) if text not in own]
            if len(own) + len(fill) < len(slots):
                dropped += 1
                continue
            fill = iter(fill)
            row = {**row, **{name: row[name] if row[name] is not None else next(fill) for name in slots}}
        kept.append(row)
    logger.info("Mined hard negatives for %d of %d rows (range_min %d, relative_margin %s); %d rows had too few "
                "candidates past the filters and were dropped.", len(needy) - dropped, len(rows), range_min,
                relative_margin, dropped)
    if not kept:
        raise ValueError("No row kept a mined negative: lower mine_range_min or mine_relative_margin, or add data.")
    return Dataset.from_list(kept, features=dataset.features)

