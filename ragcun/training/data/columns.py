"""Normalising one source to the columns ``anchor``, ``positive``, ``negative``, ``negative_2``, ... (all text).

sentence-transformers feeds columns to the loss by position, not by name, so each source's columns
are given their roles here (by a ``columns=`` mapping, else by recognised names), ids and labels
are dropped, and an empty text fails loudly instead of being trained on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from ragcun.training.data.loaders import beir_pairs, load_disk, load_hub
from ragcun.training.data.reading import read_files
from ragcun.training.data.roles import RECOGNISED, ROLES, closest, negative_columns, role_of
from ragcun.training.data.sources import Resolved

logger = logging.getLogger(__name__)


@dataclass
class Roles:
    """Which source column plays which role; ``dropped`` are the columns not trained on."""

    anchor: str
    positive: str
    negatives: list[str]
    dropped: list[str]

    @property
    def used(self) -> list[str]:
        return [self.anchor, self.positive, *self.negatives]


def assign_roles(names: list[str], mapping: dict[str, str] | None, label: str, headerless: bool) -> Roles:
    """The roles of a source's columns, or a ValueError that lists the columns and how to map them."""
    if mapping is not None:
        for column in mapping:
            if column not in names:
                how = " (the TSV was read without a header, so its columns are positional)" if headerless else ""
                raise ValueError(
                    f"{label}: columns names {column!r}, which is not in the data{how}; the available columns are "
                    f"{names}{closest(column, names)}."
                )
        roles = {column: mapping.get(column) for column in names}
    else:
        roles = {column: role_of(column) for column in names}
    by_role = {role: [column for column in names if roles[column] == role] for role in ROLES}
    for role in ("anchor", "positive"):
        if len(by_role[role]) > 1:
            raise ValueError(
                f"{label}: several columns could be the {role}: {by_role[role]}. Choose with an explicit mapping, "
                f"e.g. columns={{{by_role[role][0]!r}: {role!r}, ...}}."
            )
    missing = [role for role in ("anchor", "positive") if not by_role[role]]
    if missing:
        example = ", ".join(f"{name!r}: {role!r}" for name, role in zip(names, ("anchor", "positive")))
        raise ValueError(
            f"{label}: found no {' and no '.join(missing)} column among the columns {names}. Recognised names "
            f"(case-insensitive) are {RECOGNISED}. Rename the columns, or map them explicitly, e.g. "
            f"columns={{{example}}}."
        )
    return Roles(
        anchor=by_role["anchor"][0],
        positive=by_role["positive"][0],
        negatives=by_role["negative"],
        dropped=[column for column in names if roles[column] is None],
    )


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _python_to_arrow(values: list, column: str, label: str) -> pa.Array:
    """Raw Python values (texts, numbers, lists, None/NaN) as an arrow string or list<string> array."""
    is_list = [isinstance(v, (list, tuple, np.ndarray)) for v in values]
    if any(is_list):
        if not all(flag or _is_missing(v) for flag, v in zip(is_list, values)):
            raise ValueError(
                f"{label}: column {column!r} mixes lists and single values; make every row one or the other."
            )
        return pa.array(
            [None if _is_missing(v) else [None if _is_missing(x) else str(x) for x in v] for v in values],
            pa.list_(pa.string()),
        )
    return pa.array([None if _is_missing(v) else str(v) for v in values], pa.string())


def _as_text(array: pa.ChunkedArray | pa.Array, column: str, role: str, label: str) -> pa.ChunkedArray:
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return pc.cast(array, pa.string())
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return pc.cast(array, pa.string())
    raise ValueError(
        f"{label}: column {column!r} ({role}) holds {kind} values; it must hold one text per row."
    )


def _empty_rows(array: pa.ChunkedArray) -> np.ndarray:
    mask = pc.or_kleene(pc.is_null(array), pc.equal(pc.utf8_trim_whitespace(array), ""))
    return np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def normalise(table: pa.Table, roles: Roles, label: str) -> Dataset:
    """The source as ``anchor``, ``positive``, ``negative``, ... string columns; empty texts are an error."""
    out: dict[str, pa.ChunkedArray] = {}
    out["anchor"] = _as_text(table[roles.anchor], roles.anchor, "anchor", label)
    positive = table[roles.positive]
    if _is_list(positive.type):
        values = positive.to_pylist()
        if any(v and len(v) > 1 for v in values):
            logger.info(
                "%s: column %r holds several positives per row; keeping the first of each.", label, roles.positive
            )
        positive = pa.chunked_array([pa.array([v[0] if v else None for v in values], pa.string())])
    out["positive"] = _as_text(positive, roles.positive, "positive", label)
    negatives: list[tuple[str, pa.ChunkedArray]] = []
    for column in roles.negatives:
        array = table[column]
        if _is_list(array.type):
            values = array.to_pylist()
            lengths = [len(v) if v else 0 for v in values]
            keep = min(lengths)
            if keep < max(lengths):
                logger.warning(
                    "%s: column %r holds between %d and %d negatives per row; keeping the first %d of each row "
                    "(the shortest list) so that every row has the same columns.",
                    label, column, keep, max(lengths), keep,
                )
            for i in range(keep):
                negatives.append((column, pa.chunked_array([pa.array([v[i] for v in values], pa.string())])))
        else:
            negatives.append((column, _as_text(array, column, "negative", label)))
    names = negative_columns(len(negatives))
    for name, (_, array) in zip(names, negatives):
        out[name] = array
    sources = {"anchor": roles.anchor, "positive": roles.positive}
    sources.update({name: column for name, (column, _) in zip(names, negatives)})
    for name, array in out.items():
        empty = _empty_rows(array)
        if len(empty):
            raise ValueError(
                f"{label}: {len(empty)} of {table.num_rows} rows have an empty or missing {name} (column "
                f"{sources[name]!r}; the first is data row {int(empty[0]) + 1}). Clean the data (drop or fill those "
                "rows) and retry; rows are never dropped silently."
            )
    return Dataset(pa.table(out))


def load_source(resolved: Resolved) -> Dataset:
    """One resolved source, read and normalised."""
    source, kind, files = resolved
    label = source.label
    if kind == "beir":
        dataset = normalise(beir_pairs(source, files[0]), Roles("anchor", "positive", [], []), label)
        logger.info("%s: %d (query, relevant document) pairs from the BEIR folder %s.", label, len(dataset), files[0])
        return dataset
    if kind in ("hub", "disk"):
        raw = load_hub(source) if kind == "hub" else load_disk(source, files[0])
        if source.max_samples is not None:
            raw = raw.select(range(min(source.max_samples, len(raw))))
        if len(raw) == 0:
            raise ValueError(f"{label}: split {source.split!r} of {source.path!r} holds no rows.")
        roles = assign_roles(list(raw.column_names), source.columns, label, headerless=False)
        table = raw.select_columns(roles.used).with_format("arrow")[:]
    else:
        rows = read_files(files, source)
        roles = assign_roles(rows.column_names, source.columns, label, rows.headerless)
        # Through Python values, as every file format gives them: numbers become their str(), lists stay lists.
        table = pa.table({column: _python_to_arrow(rows.values(column), column, label) for column in roles.used})
    dataset = normalise(table, roles, label)
    logger.info(
        "%s: %d rows; anchor <- %r, positive <- %r, %d negative column(s) from %s%s.",
        label, len(dataset), roles.anchor, roles.positive, len(dataset.column_names) - 2, roles.negatives,
        f"; dropped {roles.dropped}" if roles.dropped else "",
    )
    return dataset
