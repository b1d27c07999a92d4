"""Writes that never leave a half-written file or folder in place of the previous one, and the writable-folder
check every command runs before spending model time."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` beside ``path``, flush it to disk, then rename over: readers see the old file or the new
    one, never a mix. The temporary name is per process (several may write into one cache) and keeps the
    suffix, for writers such as ``np.save`` that add one otherwise."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    write(tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


_PREVIOUS = ".old-"  # the previous folder, set aside beside the target while the new one is swapped in


def previous_copies(target: Path) -> list[Path]:
    """Copies of ``target`` that :func:`write_folder_atomically` set aside and a crash left behind (readers fall
    back to one when the crash came between the two renames)."""
    return list(Path(target).parent.glob(f".{Path(target).name}{_PREVIOUS}*"))


def write_folder_atomically(target: Path, write: Callable[[Path], object], mode: int | None = None) -> Path:
    """``write(staging)`` into a fresh folder beside ``target``, then swap it in: a crash at any point leaves the
    previous ``target`` (or, mid-swap, its copy ``.NAME.old-*`` beside it) and never a half-written folder.
    ``mode``: the staging folder's permissions (default: what the umask gives a new folder)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir() if mode is None else staging.mkdir(mode=mode)
    try:
        write(staging)
        fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    aside = target.parent / f".{target.name}{_PREVIOUS}{uuid.uuid4().hex[:12]}"
    if target.exists():
        os.replace(target, aside)
    os.replace(staging, target)
    fsync_dir(target.parent)
    # The previous copy, and leftovers of writes to this target that crashed earlier.
    for leftover in [aside, *previous_copies(target), *target.parent.glob(f".{target.name}.tmp-*")]:
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)
    return target


def ensure_writable_folder(path: str | Path, what: str, advice: str) -> Path:
    """Create ``path`` if needed and prove it writable by writing a file (``os.access`` is not enough: root, ACLs,
    read-only mounts). Raises NotADirectoryError / PermissionError naming ``what`` and ``advice``."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise NotADirectoryError(
            f"{what} {path} is not a writable directory: it or a parent is a regular file ({error}). {advice}"
        ) from error
    except OSError as error:
        raise PermissionError(f"{what} {path} is not a writable directory: cannot create it ({error}). {advice}") from error
    if not path.is_dir():
        raise NotADirectoryError(f"{what} {path} is not a writable directory: it is a file. {advice}")
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".ragcun-write-test-"):
            pass
    except OSError as error:
        raise PermissionError(f"{what} {path} is not a writable directory ({error}). {advice}") from error
    return path
