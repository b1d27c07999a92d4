"""Training data: local files, BEIR folders and Hub datasets, mixed into one ``datasets.Dataset``.

sentence-transformers feeds columns to the loss by position, not by name, so the result has exactly
the columns ``anchor``, ``positive``, then zero or more ``negative``, ``negative_2``, ... (all
strings), in that order, and nothing else: ids, scores and labels are dropped, because a ``label``
column would be passed to the loss as a target. (``ragcun.evaluation.beir`` reads BEIR folders for
*evaluation*; this module reads data for *training*.)

Every check that needs no loading is done up front (``validate_sources``), so a training script
can fail in a second on a typo instead of after loading a model.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import glob
import gzip
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, concatenate_datasets

from ragcun.evaluation.beir import load_beir

__all__ = ["DataSource", "load_training_data", "validate_sources", "negative_columns", "ROLES", "FORMATS"]

logger = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("anchor", "positive", "negative")
FORMATS: tuple[str, ...] = ("json", "jsonl", "csv", "tsv", "parquet")
_EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
_SUPPORTED = ".jsonl, .json, .csv, .tsv, .parquet (text formats may also be .gz-compressed)"

ANCHOR_NAMES: tuple[str, ...] = ("query", "anchor", "question")
POSITIVE_NAMES: tuple[str, ...] = ("pos", "positive", "document", "passage", "answer")
# neg, negative, hard_negative, neg_1, negative2, negatives (a list column), hard_negatives, ...
_NEGATIVE_RE = re.compile(r"^(neg|negative|hard_negative)s?(_?\d+)?$")
# Names that may sit in a TSV header beside the text columns (they are dropped, never trained on).
_ID_NAMES = frozenset(
    {"id", "_id", "qid", "pid", "query_id", "query-id", "pos_id", "neg_id", "doc_id", "corpus_id", "corpus-id",
     "label", "score"}
)
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_RECOGNISED = (
    f"anchor: {', '.join(ANCHOR_NAMES)}; positive: {', '.join(POSITIVE_NAMES)}; negatives: neg, negative, "
    "hard_negative, neg_1, negative_2, ..., or a list column such as negatives"
)


@dataclass
class DataSource:
    """One training source, and how to read it.

    ``path`` is a local file, a glob (``data/*.jsonl``), a local folder (a BEIR folder, a
    ``save_to_disk`` folder, or a folder of data files) or a Hub dataset id. ``columns`` maps the
    file's column names to the roles ``anchor`` / ``positive`` / ``negative`` (several columns may
    be ``negative``; they keep their file order); without it the names are recognised
    automatically. ``max_samples`` keeps the first N rows of this source, before any shuffling.
    """

    path: str
    split: str = "train"
    columns: dict[str, str] | None = None
    max_samples: int | None = None
    name: str | None = None
    format: str | None = None
    config_name: str | None = None

    @property
    def label(self) -> str:
        """How this source is named in logs and errors."""
        return self.name or str(self.path)


# A list of sources, or one: DataSource objects, dicts of their fields, or plain paths / Hub ids.
Sources = Union[Sequence[Union[DataSource, Mapping[str, Any], str]], DataSource, Mapping[str, Any], str]


@dataclass
class _Roles:
    anchor: str
    positive: str
    negatives: list[str]
    dropped: list[str]


def negative_columns(count: int) -> list[str]:
    """The names of ``count`` negative columns: ``negative``, ``negative_2``, ``negative_3``, ..."""
    return ["negative" if i == 0 else f"negative_{i + 1}" for i in range(count)]


def _closest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _role_of(column: str) -> str | None:
    """The role a column name is recognised as (case-insensitive), or None for columns to drop."""
    name = column.strip().lower()
    if name in ANCHOR_NAMES:
        return "anchor"
    if name in POSITIVE_NAMES:
        return "positive"
    if _NEGATIVE_RE.match(name):
        return "negative"
    return None


def _file_format(path: Path, override: str | None) -> str | None:
    if override:
        return override
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    return _EXTENSIONS.get(Path(name).suffix)


def _reader(fmt: str) -> str:
    return "json" if fmt in ("json", "jsonl") else fmt


def _has_glob(path: str) -> bool:
    return any(char in path for char in "*?[")


def _looks_local(path: str) -> bool:
    """Whether a path that does not exist was meant as a local path rather than a Hub id (``org/name``)."""
    return (
        _has_glob(path)
        or Path(path).is_absolute()
        or path.startswith((".", "~"))
        or "\\" in path
        or path.count("/") > 1
        or path.endswith("/")
        or _file_format(Path(path), None) is not None
    )


# --------------------------------------------------------------------------------------------------
# Checks that need no loading.


def _as_source(item: Any, index: int) -> DataSource:
    if isinstance(item, DataSource):
        return item
    if isinstance(item, (str, os.PathLike)):
        return DataSource(path=str(item))
    if isinstance(item, Mapping):
        valid = [field.name for field in dataclasses.fields(DataSource)]
        for key in item:
            if key not in valid:
                raise ValueError(
                    f"Data source #{index} has the unknown key {key!r}{_closest(str(key), valid)}; "
                    f"valid keys are {', '.join(valid)}."
                )
        if "path" not in item:
            raise ValueError(f"Data source #{index} has no 'path': give a file, glob, folder or Hub dataset id.")
        return DataSource(**item)
    raise ValueError(
        f"Data source #{index} is a {type(item).__name__}; pass a DataSource, a dict of its fields, or a path string."
    )


def _check_fields(source: DataSource) -> DataSource:
    """Type and value checks of the fields; returns a copy with ``format`` and roles normalised."""
    label = source.label
    if not isinstance(source.path, (str, os.PathLike)) or not str(source.path).strip():
        raise ValueError(f"{label}: path must be a non-empty string (a file, glob, folder or Hub dataset id).")
    if not isinstance(source.split, str) or not source.split.strip():
        raise ValueError(f"{label}: split must be a non-empty string such as 'train', got {source.split!r}.")
    if source.max_samples is not None and (
        isinstance(source.max_samples, bool) or not isinstance(source.max_samples, int) or source.max_samples <= 0
    ):
        raise ValueError(f"{label}: max_samples must be a positive integer or None, got {source.max_samples!r}.")
    fmt = source.format
    if fmt is not None:
        fmt = str(fmt).lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(
                f"{label}: unknown format {source.format!r}{_closest(fmt, FORMATS)}; use one of {', '.join(FORMATS)}."
            )
    columns = source.columns
    if columns is not None:
        if not isinstance(columns, Mapping) or not columns:
            raise ValueError(
                f"{label}: columns must be a non-empty mapping from column names to roles, "
                "e.g. {'question': 'anchor', 'answer': 'positive'}."
            )
        normalised: dict[str, str] = {}
        for column, role in columns.items():
            role_name = str(role).strip().lower()
            if role_name not in ROLES:
                synonym = _role_of(role_name)
                hint = f" (did you mean {synonym!r}?)" if synonym else _closest(role_name, ROLES)
                raise ValueError(
                    f"{label}: columns maps {column!r} to the unknown role {role!r}{hint}; the roles are "
                    f"{', '.join(ROLES)}."
                )
            normalised[str(column)] = role_name
        for role in ("anchor", "positive"):
            named = [column for column, r in normalised.items() if r == role]
            if len(named) != 1:
                raise ValueError(
                    f"{label}: columns must map exactly one column to {role!r}, got {len(named)} ({named}). "
                    "Only 'negative' may be given to several columns."
                )
        columns = normalised
    return dataclasses.replace(source, path=str(source.path), format=fmt, columns=columns)


def _check_formats(files: list[Path], source: DataSource) -> str:
    formats = set()
    for file in files:
        fmt = _file_format(file, source.format)
        if fmt is None:
            raise ValueError(
                f"{source.label}: cannot tell the format of {file}: supported extensions are {_SUPPORTED}. "
                f"Rename the file, or set format= one of {', '.join(FORMATS)}."
            )
        formats.add(_reader(fmt))
    if len(formats) > 1:
        raise ValueError(
            f"{source.label}: the files mix formats ({', '.join(sorted(formats))}); point the source at one format "
            "(e.g. a glob like data/*.jsonl) and add the others as separate sources."
        )
    return _file_format(files[0], source.format)  # type: ignore[return-value]


def _mentions_split(relative: Path, split: str) -> bool:
    pattern = re.compile(rf"^{re.escape(split.lower())}([-_.]|$)")
    return any(pattern.match(part.lower()) for part in relative.parts)


def _resolve(source: DataSource) -> tuple[str, list[Path]]:
    """Where the source's rows come from: ("files", paths), ("beir", [folder]), ("disk", [folder]) or ("hub", [])."""
    label, raw = source.label, os.path.expanduser(source.path)
    if _has_glob(raw):
        matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
        if not matches:
            raise FileNotFoundError(
                f"{label}: the pattern {raw!r} matches no file (relative to {Path.cwd()}). Check the pattern, "
                "or pass a file path."
            )
        _check_formats(matches, source)
        return "files", matches
    path = Path(raw)
    if path.is_dir():
        if (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file():
            qrels = path / "qrels" / f"{source.split}.tsv"
            if not qrels.is_file():
                found = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
                raise FileNotFoundError(
                    f"{label}: {path} is a BEIR folder but has no {qrels}; its qrels splits are {found}. "
                    "Set split= to one of them."
                )
            if source.columns or source.format:
                raise ValueError(
                    f"{label}: {path} is a BEIR folder, read as (query, relevant document) pairs; "
                    "columns= and format= do not apply to it. Remove them."
                )
            return "beir", [path]
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return "disk", [path]
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and _file_format(p, None) is not None
        )
        if not files:
            raise FileNotFoundError(
                f"{label}: the folder {path} holds no data file ({_SUPPORTED}), nor a BEIR layout "
                "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv), nor a datasets save_to_disk folder."
            )
        of_split = [p for p in files if _mentions_split(p.relative_to(path), source.split)]
        if of_split:
            files = of_split
        _check_formats(files, source)
        return "files", files
    if path.is_file():
        _check_formats([path], source)
        return "files", [path]
    if _looks_local(raw):
        raise FileNotFoundError(
            f"{label}: no file or folder {raw!r} (resolved to {path.resolve()}). Check the path, "
            "or give a Hub dataset id like 'org/name'."
        )
    return "hub", []


def _validate(sources: Any) -> list[tuple[DataSource, str, list[Path]]]:
    if isinstance(sources, (str, os.PathLike, Mapping, DataSource)):
        sources = [sources]
    if not sources:
        raise ValueError("No training data sources given: pass at least one, e.g. [DataSource(path='train.jsonl')].")
    checked = []
    for index, item in enumerate(sources):
        source = _check_fields(_as_source(item, index))
        kind, files = _resolve(source)
        checked.append((source, kind, files))
    return checked


def validate_sources(sources: Sources) -> list[DataSource]:
    """Every check that needs no loading: keys, field values, roles, file existence, extensions, BEIR layout.

    Call it before loading a model so a typo fails in a second. Hub ids cannot be checked without
    loading; they are only checked by ``load_training_data``.
    """
    return [source for source, _, _ in _validate(sources)]


# --------------------------------------------------------------------------------------------------
# Reading.


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _read_json(path: Path, limit: int | None) -> pd.DataFrame:
    """JSON Lines (one object per line), or a .json file holding one array of objects."""
    records: list[dict] = []
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if limit is not None and len(records) >= limit:
                break
            if not line.strip():
                continue
            if not records and line.lstrip().startswith("["):
                try:
                    records = json.loads(line + handle.read())
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: not valid JSON ({error}).") from error
                if not isinstance(records, list):
                    raise ValueError(f"{path}: expected an array of objects or one JSON object per line.")
                records = records[:limit] if limit is not None else records
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}: line {number} is not valid JSON ({error.msg}). Expected one JSON object per line."
                ) from error
    if not all(isinstance(record, dict) for record in records):
        raise ValueError(f"{path}: every record must be a JSON object such as {{\"query\": ..., \"pos\": ...}}.")
    return pd.DataFrame.from_records(records)


def _tsv_has_header(path: Path, columns: Mapping[str, str] | None) -> bool:
    """A first line is a header when all its fields are known column names (roles, mapped names, ids),
    or when it names an anchor and a positive column and every field is a bare identifier."""
    with _open_text(path) as handle:
        first = handle.readline().rstrip("\r\n")
    names = [field.strip() for field in first.split("\t")]
    mapped = dict(columns or {})

    def role(name: str) -> str | None:
        return mapped.get(name) or _role_of(name)

    if all(name in mapped or role(name) or name.lower() in _ID_NAMES for name in names):
        return True
    return {"anchor", "positive"} <= {role(name) for name in names} and all(_IDENTIFIER_RE.match(n) for n in names)


def _positional_names(count: int) -> list[str]:
    return ["anchor", "positive", *negative_columns(max(count - 2, 0))][:count]


def _read_file(path: Path, fmt: str, source: DataSource, limit: int | None) -> tuple[pd.DataFrame, bool]:
    """One file as a DataFrame of raw values, and whether it was read as headerless (positional)."""
    if _reader(fmt) == "json":
        return _read_json(path, limit), False
    if fmt == "parquet":
        frame = pd.read_parquet(path)
        return (frame.head(limit) if limit is not None else frame), False
    # Every cell as text, nothing turned into NaN ("NA", "null" are texts too), quotes kept as they are in TSV.
    options: dict[str, Any] = {"dtype": str, "na_filter": False, "nrows": limit, "encoding": "utf-8"}
    headerless = False
    try:
        if fmt == "tsv":
            headerless = not _tsv_has_header(path, source.columns)
            frame = pd.read_csv(
                path, sep="\t", quoting=csv.QUOTE_NONE, header=None if headerless else 0, **options
            )
            if headerless:
                frame.columns = _positional_names(len(frame.columns))
        else:
            frame = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(), headerless
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{source.label}: could not parse {path} as {fmt.upper()}: {error}") from error
    return frame, headerless


def _read_files(files: list[Path], source: DataSource) -> tuple[pd.DataFrame, bool]:
    fmt = _file_format(files[0], source.format) or ""
    frames, headerless = [], False
    remaining = source.max_samples
    for file in files:
        if remaining is not None and remaining <= 0:
            break
        frame, headerless_file = _read_file(file, fmt, source, remaining)
        headerless = headerless or headerless_file
        if frames and len(frame) and list(frame.columns) != list(frames[0][1].columns):
            raise ValueError(
                f"{source.label}: {file} has the columns {list(frame.columns)} but {frames[0][0]} has "
                f"{list(frames[0][1].columns)}. Make the files agree, or give them as separate sources."
            )
        if len(frame):
            frames.append((file, frame))
            remaining = None if remaining is None else remaining - len(frame)
    if not frames:
        shown = ", ".join(str(f) for f in files[:3]) + (", ..." if len(files) > 3 else "")
        raise ValueError(f"{source.label}: {shown} hold(s) no data rows. Check the file(s), or remove this source.")
    frame = frames[0][1] if len(frames) == 1 else pd.concat([f for _, f in frames], ignore_index=True)
    return frame, headerless


def _load_hub(source: DataSource) -> Dataset:
    import datasets

    try:
        loaded = datasets.load_dataset(source.path, source.config_name, split=source.split)
    except Exception as error:  # datasets raises many types: ConnectionError, DatasetNotFoundError, ValueError, ...
        raise ValueError(
            f"{source.label}: {source.path!r} is not a local file or folder, and could not be loaded as a Hub dataset "
            f"id (config {source.config_name!r}, split {source.split!r}): {type(error).__name__}: {error}. "
            "Offline (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1) only reads the local Hugging Face cache. "
            "Pass a local file (.jsonl, .csv, .tsv, .parquet), a glob or a folder instead, or load the dataset once "
            "while online."
        ) from error
    if not isinstance(loaded, Dataset):
        raise ValueError(f"{source.label}: load_dataset returned a {type(loaded).__name__}, not a Dataset.")
    return loaded


def _load_disk(source: DataSource, folder: Path) -> Dataset:
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, DatasetDict):
        if source.split not in loaded:
            raise ValueError(f"{source.label}: {folder} has no split {source.split!r}; it has {sorted(loaded)}.")
        loaded = loaded[source.split]
    return loaded


def _beir_pairs(source: DataSource, folder: Path) -> pa.Table:
    """(query, relevant document) pairs for every qrel with score > 0; documents are ``title + " " + text``."""
    split = load_beir(folder, source.split)
    documents = dict(zip(split.corpus_ids, split.corpus_texts))
    anchors, positives = [], []
    for query_id, query_text in zip(split.query_ids, split.query_texts):
        for doc_id, score in split.qrels[query_id].items():
            if score > 0:
                anchors.append(query_text)
                positives.append(documents[doc_id])
    if source.max_samples is not None:
        anchors, positives = anchors[: source.max_samples], positives[: source.max_samples]
    if not anchors:
        raise ValueError(
            f"{source.label}: qrels/{source.split}.tsv of {folder} has no judgement with score > 0, "
            "so no training pair."
        )
    return pa.table({"anchor": pa.array(anchors, pa.string()), "positive": pa.array(positives, pa.string())})


# --------------------------------------------------------------------------------------------------
# Normalising to anchor / positive / negative...


def _assign_roles(names: list[str], source: DataSource, headerless: bool) -> _Roles:
    label = source.label
    if source.columns is not None:
        for column in source.columns:
            if column not in names:
                how = " (the TSV was read without a header, so its columns are positional)" if headerless else ""
                raise ValueError(
                    f"{label}: columns names {column!r}, which is not in the data{how}; the available columns are "
                    f"{names}{_closest(column, names)}."
                )
        roles = {column: source.columns.get(column) for column in names}
    else:
        roles = {column: _role_of(column) for column in names}
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
            f"(case-insensitive) are {_RECOGNISED}. Rename the columns, or map them explicitly, e.g. "
            f"columns={{{example}}}."
        )
    return _Roles(
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


def _normalise(table: pa.Table, roles: _Roles, label: str) -> Dataset:
    out: dict[str, pa.ChunkedArray] = {}
    out["anchor"] = _as_text(table[roles.anchor], roles.anchor, "anchor", label)
    positive = table[roles.positive]
    if pa.types.is_list(positive.type) or pa.types.is_large_list(positive.type):
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
        if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
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
    for name, (column, array) in zip(negative_columns(len(negatives)), negatives):
        out[name] = array
    sources = {"anchor": roles.anchor, "positive": roles.positive}
    sources.update({name: column for name, (column, _) in zip(negative_columns(len(negatives)), negatives)})
    for name, array in out.items():
        empty = _empty_rows(array)
        if len(empty):
            raise ValueError(
                f"{label}: {len(empty)} of {table.num_rows} rows have an empty or missing {name} (column "
                f"{sources[name]!r}; the first is data row {int(empty[0]) + 1}). Clean the data (drop or fill those "
                "rows) and retry; rows are never dropped silently."
            )
    return Dataset(pa.table(out))


def _load_source(source: DataSource, kind: str, files: list[Path]) -> Dataset:
    label = source.label
    if kind == "beir":
        dataset = _normalise(_beir_pairs(source, files[0]), _Roles("anchor", "positive", [], []), label)
        logger.info("%s: %d (query, relevant document) pairs from the BEIR folder %s.", label, len(dataset), files[0])
        return dataset
    headerless = False
    if kind in ("hub", "disk"):
        raw = _load_hub(source) if kind == "hub" else _load_disk(source, files[0])
        if source.max_samples is not None:
            raw = raw.select(range(min(source.max_samples, len(raw))))
        if len(raw) == 0:
            raise ValueError(f"{label}: split {source.split!r} of {source.path!r} holds no rows.")
        roles = _assign_roles(list(raw.column_names), source, headerless)
        used = [roles.anchor, roles.positive, *roles.negatives]
        table = raw.select_columns(used).with_format("arrow")[:]
    else:
        frame, headerless = _read_files(files, source)
        roles = _assign_roles([str(c) for c in frame.columns], source, headerless)
        frame.columns = [str(c) for c in frame.columns]
        used = [roles.anchor, roles.positive, *roles.negatives]
        table = pa.table({column: _python_to_arrow(frame[column].tolist(), column, label) for column in used})
    dataset = _normalise(table, roles, label)
    logger.info(
        "%s: %d rows; anchor <- %r, positive <- %r, %d negative column(s) from %s%s.",
        label, len(dataset), roles.anchor, roles.positive, len(dataset.column_names) - 2, roles.negatives,
        f"; dropped {roles.dropped}" if roles.dropped else "",
    )
    return dataset


# --------------------------------------------------------------------------------------------------
# Mixing and the held-out split.


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
    checked = _validate(sources)

    parts = [(source.label, _load_source(source, kind, files)) for source, kind, files in checked]
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
