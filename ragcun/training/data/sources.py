"""Training sources: what the user names (file, glob, folder, Hub id) and the checks that need no loading.

Everything here runs before any row is read, so a typo in a recipe fails in a second instead of
after a model has been loaded.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Union

from ragcun.training.data.roles import ROLES, closest, role_of

FORMATS: tuple[str, ...] = ("json", "jsonl", "csv", "tsv", "parquet")
_EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
SUPPORTED = ".jsonl, .json, .csv, .tsv, .parquet (text formats may also be .gz-compressed)"


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

Kind = Literal["files", "beir", "disk", "hub"]


class Resolved(NamedTuple):
    """A checked source and where its rows come from: data files, a BEIR or save_to_disk folder, or the Hub."""

    source: DataSource
    kind: Kind
    files: list[Path]


def file_format(path: Path, override: str | None) -> str | None:
    """The format of a data file: the ``format=`` override, else its extension (ignoring a ``.gz``)."""
    if override:
        return override
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    return _EXTENSIONS.get(Path(name).suffix)


def reader_of(fmt: str) -> str:
    """The reader a format needs: JSON Lines and JSON arrays share one."""
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
        or file_format(Path(path), None) is not None
    )


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
                    f"Data source #{index} has the unknown key {key!r}{closest(str(key), valid)}; "
                    f"valid keys are {', '.join(valid)}."
                )
        if "path" not in item:
            raise ValueError(f"Data source #{index} has no 'path': give a file, glob, folder or Hub dataset id.")
        return DataSource(**item)
    raise ValueError(
        f"Data source #{index} is a {type(item).__name__}; pass a DataSource, a dict of its fields, or a path string."
    )


def _check_columns(label: str, columns: Any) -> dict[str, str]:
    """A ``columns=`` mapping with its roles lower-cased, or a ValueError naming the wrong role."""
    if not isinstance(columns, Mapping) or not columns:
        raise ValueError(
            f"{label}: columns must be a non-empty mapping from column names to roles, "
            "e.g. {'question': 'anchor', 'answer': 'positive'}."
        )
    normalised: dict[str, str] = {}
    for column, role in columns.items():
        role_name = str(role).strip().lower()
        if role_name not in ROLES:
            synonym = role_of(role_name)
            hint = f" (did you mean {synonym!r}?)" if synonym else closest(role_name, ROLES)
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
    return normalised


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
                f"{label}: unknown format {source.format!r}{closest(fmt, FORMATS)}; use one of {', '.join(FORMATS)}."
            )
    columns = None if source.columns is None else _check_columns(label, source.columns)
    return dataclasses.replace(source, path=str(source.path), format=fmt, columns=columns)


def _check_formats(files: list[Path], source: DataSource) -> str:
    """The one format of a source's files; a ValueError if one has no known format or they mix formats."""
    formats = set()
    for file in files:
        fmt = file_format(file, source.format)
        if fmt is None:
            raise ValueError(
                f"{source.label}: cannot tell the format of {file}: supported extensions are {SUPPORTED}. "
                f"Rename the file, or set format= one of {', '.join(FORMATS)}."
            )
        formats.add(reader_of(fmt))
    if len(formats) > 1:
        raise ValueError(
            f"{source.label}: the files mix formats ({', '.join(sorted(formats))}); point the source at one format "
            "(e.g. a glob like data/*.jsonl) and add the others as separate sources."
        )
    return file_format(files[0], source.format)  # type: ignore[return-value]


def _mentions_split(relative: Path, split: str) -> bool:
    pattern = re.compile(rf"^{re.escape(split.lower())}([-_.]|$)")
    return any(pattern.match(part.lower()) for part in relative.parts)


def _resolve_folder(source: DataSource, path: Path) -> Resolved:
    label = source.label
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
        return Resolved(source, "beir", [path])
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return Resolved(source, "disk", [path])
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and file_format(p, None) is not None
    )
    if not files:
        raise FileNotFoundError(
            f"{label}: the folder {path} holds no data file ({SUPPORTED}), nor a BEIR layout "
            "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv), nor a datasets save_to_disk folder."
        )
    of_split = [p for p in files if _mentions_split(p.relative_to(path), source.split)]
    if of_split:
        files = of_split
    _check_formats(files, source)
    return Resolved(source, "files", files)


def resolve(source: DataSource) -> Resolved:
    """Where the source's rows come from; every path, glob and folder layout is checked here."""
    label, raw = source.label, os.path.expanduser(source.path)
    if _has_glob(raw):
        matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
        if not matches:
            raise FileNotFoundError(
                f"{label}: the pattern {raw!r} matches no file (relative to {Path.cwd()}). Check the pattern, "
                "or pass a file path."
            )
        _check_formats(matches, source)
        return Resolved(source, "files", matches)
    path = Path(raw)
    if path.is_dir():
        return _resolve_folder(source, path)
    if path.is_file():
        _check_formats([path], source)
        return Resolved(source, "files", [path])
    if _looks_local(raw):
        raise FileNotFoundError(
            f"{label}: no file or folder {raw!r} (resolved to {path.resolve()}). Check the path, "
            "or give a Hub dataset id like 'org/name'."
        )
    return Resolved(source, "hub", [])


def resolve_all(sources: Any) -> list[Resolved]:
    """Every source checked and resolved, in order; the first problem raises."""
    if isinstance(sources, (str, os.PathLike, Mapping, DataSource)):
        sources = [sources]
    if not sources:
        raise ValueError("No training data sources given: pass at least one, e.g. [DataSource(path='train.jsonl')].")
    return [resolve(_check_fields(_as_source(item, index))) for index, item in enumerate(sources)]


def validate_sources(sources: Sources) -> list[DataSource]:
    """Every check that needs no loading: keys, field values, roles, file existence, extensions, BEIR layout.

    Call it before loading a model so a typo fails in a second. Hub ids cannot be checked without
    loading; they are only checked by ``load_training_data``.
    """
    return [resolved.source for resolved in resolve_all(sources)]
