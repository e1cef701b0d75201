"""Crash-safe file writes, file hashing and absolute paths for everything the pipeline records on disk.

A run directory is only trustworthy if every file in it is either the old version or the new one, never a
half-written mix: a state file torn by a power cut or a killed worker would strand the run. Every writer here
writes a temporary file in the destination directory, flushes and fsyncs it, renames it over the destination
with `os.replace` (atomic on POSIX within one filesystem) and then fsyncs the directory so the rename itself
survives a crash. The temporary file never outlives a failed write and is never left behind on success.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_NEW_FILE_MODE = 0o666  # the process umask narrows it, as for any file `open(..., "w")` creates


def absolute_path(path: Path | str) -> Path:
    """`path` with `~` expanded, made absolute against the working directory; symlinks are kept, not resolved."""
    return Path(os.path.abspath(Path(path).expanduser()))


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace `path` with `data` in one atomic step; the parent directory must exist."""
    destination = Path(path)
    directory = destination.parent
    temporary = directory / f".{destination.name}.{uuid.uuid4().hex[:12]}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _keep_mode_of_existing(destination, temporary)
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(directory)


def atomic_write_text(path: Path | str, text: str, *, encoding: str = "utf-8") -> None:
    """Replace `path` with `text` atomically; line endings are written exactly as given."""
    atomic_write_bytes(path, text.encode(encoding))


def json_text(obj: Any) -> str:
    """The project's JSON file format: insertion order, indent 2, UTF-8 text, trailing newline, no NaN."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Replace `path` with `obj` as JSON atomically.

    The document is serialised before anything touches the disk, so an object that is not JSON (or holds
    NaN/inf, which JSON cannot represent) raises `TypeError`/`ValueError` and leaves the old file alone.
    """
    atomic_write_text(path, json_text(obj))


def sha256_file(path: Path | str) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks so large checkpoints do not fill memory."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fsync_directory(directory: Path | str) -> None:
    """Make a rename or creation inside `directory` durable.

    Some filesystems (and non-POSIX platforms) cannot fsync a directory; the data file itself is already
    synced then, so the only risk left is the one those filesystems always carry.
    """
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def directory_flock(directory: Path | str) -> Iterator[None]:
    """Hold an exclusive advisory `flock` on a directory, so read-modify-write cycles on files inside it
    never interleave between processes or threads.

    Where `flock` is unavailable (non-POSIX) or refused (some network filesystems) the block runs
    unserialised; callers keep their own atomic create/replace steps, so the worst case is a refused
    second writer rather than a torn file.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the last descriptor drops the flock


def _keep_mode_of_existing(destination: Path, temporary: Path) -> None:
    """A replaced file keeps its permissions, so an atomic rewrite never widens or narrows access."""
    try:
        mode = stat.S_IMODE(os.stat(destination).st_mode)
    except FileNotFoundError:
        return
    os.chmod(temporary, mode)
