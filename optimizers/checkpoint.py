"""Checkpoint files that survive a kill: atomic save, and a load that says what is wrong.

`torch.save(obj, path)` writes in place: a process killed (or a machine losing power) while it
writes leaves a truncated file where the previous checkpoint was, and both are lost.
`save_atomic` writes a temporary file in the same directory, flushes it to the disk
(`os.fsync`), renames it over `path` (`os.replace`, atomic on POSIX and Windows within one file
system) and syncs the directory, so `path` always holds either the previous checkpoint or the
new one, complete. `load` is `torch.load(path, weights_only=True)` that first checks the file is
whole (a truncated or corrupt file is a ValueError naming the file and what is wrong with it).

Cost: the save writes the bytes once, as `torch.save` does, plus the waits for the disk (the
fsyncs); nothing is copied in memory.
"""

from __future__ import annotations

import os
import secrets
import zipfile
from pathlib import Path
from typing import Any

import torch

TEMPORARY_PREFIX = "."
TEMPORARY_SUFFIX = ".partial"
"""A temporary file is named ".<name>.<random>.partial" beside the checkpoint; one left behind
by a process killed while saving is incomplete by construction and safe to delete."""


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save(obj) to `path` so that a kill at any moment leaves the old file or the new one.

    Steps: write to a temporary file in `path`'s directory (same file system, so the rename is
    atomic), flush and `os.fsync` it, `os.replace` it over `path`, then fsync the directory so
    the rename itself is on disk (POSIX; skipped where a directory cannot be opened). On an
    exception the temporary file is removed and `path` is untouched.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    handle, temporary = _create_temporary(directory, target.name)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_directory(directory)


def _create_temporary(directory: Path, name: str) -> tuple[int, Path]:
    """A new file ".<name>.<random>.partial" in `directory`, opened for writing: (descriptor,
    path). Created with mode 0o666 less the process's umask, as `torch.save` (`open`) creates a
    file, so the checkpoint it becomes is readable as one saved in place would be
    (`tempfile.mkstemp` would make it 0o600, owner only)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        candidate = directory / f"{TEMPORARY_PREFIX}{name}.{secrets.token_hex(8)}{TEMPORARY_SUFFIX}"
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue


def _sync_directory(directory: Path) -> None:
    """fsync a directory so that a rename in it survives a power loss (POSIX only)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; its rename is durable without this
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load(path: str | os.PathLike, *, map_location: Any = None, verify: bool = True) -> Any:
    """torch.load(path, weights_only=True, map_location=map_location), with a clear ValueError
    for a file that is truncated or corrupt (what a kill during an in-place `torch.save` leaves).

    A file that is not a complete zip archive (torch's format) is reported as truncated, with
    its size. With `verify` (default) the archive's CRC-32 checksums are checked first (one more
    read of the file, usually from the page cache): torch's reader does not check them, so a
    flipped byte in tensor data would otherwise load as a wrong value. Any other failure (a
    missing file, an object weights_only refuses) is torch's own error, unchanged.
    """
    where = Path(path)
    if verify and zipfile.is_zipfile(where):
        problem = _damage(where)
        if problem is not None:
            raise ValueError(_message(where, problem))
    try:
        return torch.load(where, weights_only=True, map_location=map_location)
    except FileNotFoundError:
        raise
    except Exception as error:
        problem = _damage(where)
        if problem is None:
            raise
        raise ValueError(f"{_message(where, problem)} (torch: {error})") from error


def _message(path: Path, problem: str) -> str:
    return (
        f"checkpoint {os.fspath(path)!r} cannot be loaded: {problem}. A file written with "
        "optimizers.checkpoint.save_atomic is never left half-written; load the previous "
        "checkpoint"
    )


def _damage(path: Path) -> str | None:
    """What is wrong with a checkpoint file, or None if it looks whole (a complete archive whose
    records pass their checksums). Reads the whole file."""
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        return f"it is truncated or not a torch checkpoint ({size} bytes, no complete archive)"
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"its archive is damaged ({size} bytes: {error})"
    if broken is not None:
        return f"it is corrupt ({size} bytes; record {broken!r} fails its checksum)"
    return None
