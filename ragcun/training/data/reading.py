"""Reading a source's data files (JSON Lines, JSON, CSV, TSV, Parquet) through ``datasets.load_dataset``.

The file formats are parsed by the ``datasets`` json / csv / parquet builders; what stays here is
what they cannot know: whether a TSV's first line is a header, that every CSV/TSV cell is text
(``007`` stays ``007``, ``NA`` stays ``NA``), that a file with no record is "no data rows" rather
than a builder error, that ``max_samples`` runs across a glob's files, and error messages that name
the source, the file (and for JSON Lines the line) and the fix.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import importlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import datasets
import pandas as pd
import pyarrow as pa
from datasets import Features, Value

from ragcun.training.data.roles import positional_names, role_of
from ragcun.training.data.sources import DataSource, file_format, reader_of

# Names that may sit in a TSV header beside the text columns (they are dropped, never trained on).
_ID_NAMES = frozenset(
    {"id", "_id", "qid", "pid", "query_id", "query-id", "pos_id", "neg_id", "doc_id", "corpus_id", "corpus-id",
     "label", "score"}
)
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# The datasets builder that parses each format: TSV is the csv builder with a tab delimiter.
_BUILDERS = {"json": "json", "jsonl": "json", "csv": "csv", "tsv": "csv", "parquet": "parquet"}
_FIX = {
    "json": "Expected one JSON object per line (JSON Lines) or one array of objects; fix the malformed line",
    "csv": "Check the quoting and that every row has as many fields as the header",
    "tsv": "Check that every line has the same number of tab-separated fields",
    "parquet": "Check that the file is a complete Parquet file",
}


@dataclass
class Rows:
    """A source's raw rows as read: one arrow table per file, all with the same column names."""

    files: list[Path]
    tables: list[pa.Table]
    fmt: str
    headerless: bool = False
    # Per file, the columns the json builder stored as JSON text because their values mix types.
    json_columns: list[frozenset[str]] = dataclasses.field(default_factory=list)

    @property
    def column_names(self) -> list[str]:
        return [str(name) for name in self.tables[0].column_names]

    def values(self, column: str) -> list[Any]:
        """The column's raw Python values over every file, in order."""
        values: list[Any] = []
        for file, table, json_columns in zip(self.files, self.tables, self.json_columns):
            if self.fmt == "json" and pa.types.is_temporal(table[column].type):
                # pyarrow's JSON reader turns a column of ISO-date-like texts into timestamps, losing the text.
                values.extend(_json_column(file, column)[: table.num_rows])
                continue
            column_values = table[column].to_pylist()
            if column in json_columns:  # e.g. texts and numbers in one column: back to the values in the file
                column_values = [None if value is None else json.loads(value) for value in column_values]
            values.extend(column_values)
        return values


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _holds_no_json(path: Path) -> bool:
    """Whether a JSON file holds no record: only whitespace, or an empty array (the json builder fails on those)."""
    start = ""
    with _open_text(path) as handle:
        while len(start) < 2 and (chunk := handle.read(1 << 16)):
            start += "".join(chunk.split())[:2]
    return start in ("", "[]")


def _first_json_lines(path: Path, limit: int, scratch: Path) -> Path:
    """The first ``limit`` records of a JSON Lines file, copied to ``scratch`` (blank lines are not records)."""
    head = scratch / "head.jsonl"
    with _open_text(path) as source, head.open("w", encoding="utf-8") as target:
        kept = 0
        for line in source:
            if kept >= limit:
                break
            if line.strip():
                target.write(line if line.endswith("\n") else line + "\n")
                kept += 1
    return head


def _json_problem(path: Path) -> str | None:
    """The first JSON Lines line that is not a JSON object, as ``line N ...``; None if every line is one.

    Only called once the json builder has failed, to point at the line: its own errors count rows
    within a 10 MB block.
    """
    with _open_text(path) as handle:
        if handle.read(1 << 16).lstrip().startswith("["):
            return None  # one JSON array: the builder's message is the best there is
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                return f"line {number} is not valid JSON ({error.msg})"
            if not isinstance(record, dict):
                return f"line {number} is a JSON {type(record).__name__}, not an object such as {{\"query\": ...}}"
    return None


def _json_column(path: Path, column: str) -> list[Any]:
    """One column's values as written in a JSON Lines file or JSON array, for the rare column the reader mistypes."""
    with _open_text(path) as handle:
        text = handle.read()
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [record.get(column) for record in records]


def tsv_has_header(path: Path, columns: Mapping[str, str] | None) -> bool:
    """A first line is a header when all its fields are known column names (roles, mapped names, ids),
    or when it names an anchor and a positive column and every field is a bare identifier.

    Triplet files such as MS MARCO's ``triples.train.small.tsv`` have no header; no reader can tell
    that from the data alone, so the names decide.
    """
    with _open_text(path) as handle:
        first = handle.readline().rstrip("\r\n")
    names = [field.strip() for field in first.split("\t")]
    mapped = dict(columns or {})

    def role(name: str) -> str | None:
        return mapped.get(name) or role_of(name)

    if all(name in mapped or role(name) or name.lower() in _ID_NAMES for name in names):
        return True
    return {"anchor", "positive"} <= {role(name) for name in names} and all(_IDENTIFIER_RE.match(n) for n in names)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No progress bar per file read: a glob of many small files would print one each."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _builder_options(builder: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options this ``datasets`` version's builder knows (newer ones add fields)."""
    config_class = {"json": "JsonConfig", "csv": "CsvConfig", "parquet": "ParquetConfig"}[builder]
    module = importlib.import_module(f"datasets.packaged_modules.{builder}.{builder}")
    known = {field.name for field in dataclasses.fields(getattr(module, config_class))}
    return {key: value for key, value in options.items() if key in known}


def _load_file(builder: str, path: Path, options: dict[str, Any]) -> tuple[pa.Table, frozenset[str]]:
    """One file through ``datasets.load_dataset``, in memory.

    A fresh cache folder per read: the ``datasets`` cache keys local files on their modification time
    alone, so a file rewritten within the same clock tick would come back stale; these files are read
    once per run, so a persistent cache would only fill the disk. Also returns the columns stored as
    JSON text (``datasets.Json``), which the json builder uses for a column whose values mix types.
    """
    with tempfile.TemporaryDirectory(prefix="ragcun-data-") as cache, _quiet_progress():
        loaded = datasets.load_dataset(
            builder, data_files=os.path.abspath(path), split="train", cache_dir=cache, keep_in_memory=True,
            **_builder_options(builder, options),
        )
        json_columns = frozenset(name for name, feature in loaded.features.items() if type(feature).__name__ == "Json")
        return loaded.with_format("arrow")[:], json_columns


def _cause(error: BaseException) -> BaseException:
    """The parser's own error under the ``DatasetGenerationError`` that wraps it."""
    while isinstance(error, datasets.exceptions.DatasetGenerationError) and (error.__cause__ or error.__context__):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error


def _csv_options(path: Path, fmt: str, source: DataSource) -> tuple[dict[str, Any], bool] | None:
    """The csv builder's options for this file and whether it is headerless; None when it holds no data row.

    Every column is declared a string, so cells are never turned into numbers or NaN; pandas (the
    parser the csv builder runs) reads the header here, so the declared names are the ones it will find.
    """
    tsv = fmt == "tsv"
    headerless = tsv and not tsv_has_header(path, source.columns)
    options: dict[str, Any] = {
        "sep": "\t" if tsv else ",",
        "quoting": csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,  # TSV quotes are text, as in MS MARCO
        "header": None if headerless else 0,
        "na_filter": False,
        "encoding": "utf-8",
    }
    try:
        head = pd.read_csv(path, nrows=1, dtype=str, **options)
    except pd.errors.EmptyDataError:
        return None
    if head.empty:
        return None
    names = positional_names(len(head.columns)) if headerless else [str(name) for name in head.columns]
    if headerless:
        options["column_names"] = names
    options["features"] = Features({name: Value("string") for name in names})
    return options, headerless


@dataclass
class _File:
    table: pa.Table | None  # None: the file holds no data row
    headerless: bool = False
    json_columns: frozenset[str] = frozenset()


def _read_file(path: Path, fmt: str, source: DataSource, limit: int | None = None) -> _File:
    """One file's rows (at most ``limit``: a capped source never parses the rest of a large file), and whether
    it was read as headerless (positional)."""
    builder = _BUILDERS[fmt]
    headerless = False
    try:
        if builder == "json":
            if _holds_no_json(path):
                return _File(None)
            options: dict[str, Any] = {"encoding": "utf-8", "parse_agent_traces": False}
        elif builder == "csv":
            found = _csv_options(path, fmt, source)
            if found is None:
                return _File(None)
            options, headerless = found
            if limit is not None:
                options["nrows"] = limit
        else:
            options = {}
        with tempfile.TemporaryDirectory(prefix="ragcun-head-") as scratch:
            read_from = _first_json_lines(path, limit, Path(scratch)) if fmt == "jsonl" and limit is not None else path
            table, json_columns = _load_file(builder, read_from, options)
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError,
            datasets.exceptions.DatasetGenerationError) as error:
        cause = _cause(error)
        problem = (_json_problem(path) if builder == "json" else None) or f"{type(cause).__name__}: {cause}".strip()
        encoding = isinstance(cause, UnicodeError) or "encoding" in str(cause).lower()
        fix = "Save the file as UTF-8" if encoding else _FIX.get(fmt, _FIX[builder])
        raise ValueError(f"{source.label}: could not parse {path} as {fmt.upper()}: {problem}. {fix}.") from error
    return _File(table if table.num_rows else None, headerless, json_columns)


def read_files(files: list[Path], source: DataSource) -> Rows:
    """The rows of a source's files, in file order; ``max_samples`` counts across the files."""
    fmt = file_format(files[0], source.format) or ""
    rows = Rows([], [], reader_of(fmt))
    remaining = source.max_samples
    for file in files:
        if remaining is not None and remaining <= 0:
            break
        read = _read_file(file, fmt, source, remaining)
        rows.headerless = rows.headerless or read.headerless
        table = read.table
        if table is None:
            continue
        if rows.tables and table.column_names != rows.tables[0].column_names:
            raise ValueError(
                f"{source.label}: {file} has the columns {table.column_names} but {rows.files[0]} has "
                f"{rows.tables[0].column_names}. Make the files agree, or give them as separate sources."
            )
        if remaining is not None:
            table = table.slice(0, remaining)
            remaining -= table.num_rows
        rows.files.append(file)
        rows.tables.append(table)
        rows.json_columns.append(read.json_columns)
    if not rows.tables:
        shown = ", ".join(str(f) for f in files[:3]) + (", ..." if len(files) > 3 else "")
        raise ValueError(f"{source.label}: {shown} hold(s) no data rows. Check the file(s), or remove this source.")
    return rows
