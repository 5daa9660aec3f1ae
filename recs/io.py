"""Atomic writes: the one helper every writer of a final file or folder uses.

A final file is written to a temporary file beside it (same folder, so same filesystem), fsynced,
renamed over the target with `os.replace` (atomic on POSIX), and the folder is fsynced so that the
rename itself survives a crash. Readers therefore see the old complete file or the new complete
one, never a half-written one; on any failure the temporary file is removed and the target is
untouched.

A final folder (an artifact, a training checkpoint, a saved model) is filled in a temporary folder
beside it, fsynced file by file, and swapped in with two renames, because `os.replace` cannot
replace a non-empty folder:

1. ``target`` -> ``target.bak-<stamp>`` (only when ``target`` exists),
2. ``temp``   -> ``target``,

then the backup is deleted. If rename 2 fails the backup is renamed back. A process killed between
the two renames leaves the old folder, whole, at ``target.bak-<stamp>``; `restore_dir(target)`
(called by every reader of such folders) renames the newest backup back. So a reader finds either
the old complete folder or the new complete one.

Temporary files and folders get the modes a plain `open()` / `mkdir()` would give them under the
current umask (``0o666 & ~umask``, ``0o777 & ~umask``), not the private 0600/0700 of
`tempfile.mkstemp` / `mkdtemp`. Concurrent writers to one target are not supported.

Only the standard library is used: any module (`recs.data` included) may import this one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "BACKUP_INFIX",
    "atomic_replace_dir",
    "atomic_write_bytes",
    "atomic_write_file",
    "atomic_write_text",
    "backups_of",
    "fsync_dir",
    "fsync_file",
    "fsync_tree",
    "make_temp_dir",
    "restore_dir",
    "swap_dir_in",
]

log = logging.getLogger(__name__)

BACKUP_INFIX = ".bak-"  # `<target>.bak-<stamp>`: the old folder during a swap

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- modes and fsync


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask sets it)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    return 0o666 & ~_umask()


def _dir_mode() -> int:
    return 0o777 & ~_umask()


def fsync_file(path: PathLike) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: PathLike) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be
    opened or fsynced (some platforms and filesystems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: PathLike) -> None:
    """fsync every regular file and every folder under `root` (`root` included)."""
    for dirpath, _dirs, files in os.walk(root):
        base = Path(dirpath)
        for name in files:
            full = base / name
            if full.is_file() and not full.is_symlink():
                fsync_file(full)
        fsync_dir(base)


# --------------------------------------------------------------------------- files


def _temp_file(path: Path) -> Path:
    """An empty temp file beside `path`, ending with `path`'s suffix (for writers that pick the
    format by extension)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_file(path: PathLike, write_fn: Callable[[Path], object]) -> Path:
    """Call `write_fn(tmp)` to write a temp file beside `path`, then move it over `path` atomically.

    For any writer that takes a path (parquet, npy, safetensors, ONNX, savefig...). The temp file
    exists (empty) when `write_fn` is called and has `path`'s suffix. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_file(path)
    try:
        write_fn(tmp)
        os.chmod(tmp, _file_mode())  # mkstemp made it 0600
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically. Returns `path`."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write_file(path, write)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically. Returns `path`."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding) as fh:
            fh.write(text)

    return atomic_write_file(path, write)


# --------------------------------------------------------------------------- folders


def make_temp_dir(path: PathLike) -> Path:
    """A fresh empty folder beside `path` (``.<name>.tmp-XXXX``), mode ``0o777 & ~umask``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, _dir_mode())  # mkdtemp made it 0700
    return tmp


def backups_of(path: PathLike) -> list[Path]:
    """The ``<path>.bak-<stamp>`` entries an interrupted swap left, oldest first."""
    path = Path(path)
    prefix = path.name + BACKUP_INFIX
    try:
        entries = list(path.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(p for p in entries if p.name.startswith(prefix))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def swap_dir_in(tmp: PathLike, path: PathLike) -> Path:
    """Move the finished folder `tmp` (beside `path`, already fsynced) to `path`, replacing what is
    there: old aside to a backup, new in, backup deleted (see the module doc). Returns `path`."""
    tmp, path = Path(tmp), Path(path)
    parent = path.parent
    backup: Path | None = None
    if path.exists() or path.is_symlink():
        stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        backup = parent / f"{path.name}{BACKUP_INFIX}{stamp}"
        os.replace(path, backup)  # rename 1: old aside
        fsync_dir(parent)
    try:
        os.replace(tmp, path)  # rename 2: new in
    except BaseException:
        if backup is not None:
            # Put the old folder back; if even that fails it stays at `backup`, from which
            # restore_dir(path) brings it back.
            with contextlib.suppress(OSError):
                os.replace(backup, path)
        raise
    fsync_dir(parent)
    for stale in backups_of(path):  # ours, and any left by earlier crashes
        _remove(stale)
    return path


def atomic_replace_dir(path: PathLike, fill_fn: Callable[[Path], object]) -> Path:
    """Call `fill_fn(tmp)` to fill a fresh temp folder beside `path`, then swap it in atomically.

    Every file is fsynced before the swap. On any failure the temp folder is deleted and `path`
    keeps its old content. Returns `path`."""
    path = Path(path)
    tmp = make_temp_dir(path)
    try:
        fill_fn(tmp)
        fsync_tree(tmp)
        swap_dir_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def restore_dir(path: PathLike, complete: Callable[[Path], bool] | None = None) -> bool:
    """Bring back the old folder an interrupted swap left at ``<path>.bak-<stamp>``.

    Nothing happens when `path` exists. Otherwise the newest backup (for which `complete(backup)`
    holds, when given) is renamed to `path`. Returns whether `path` exists afterwards."""
    path = Path(path)
    if path.exists():
        return True
    candidates = [b for b in backups_of(path) if complete is None or complete(b)]
    if not candidates:
        return False
    newest = candidates[-1]  # backup names sort by their time stamp
    try:
        os.replace(newest, path)
    except OSError:
        return path.exists()  # someone else restored it first
    fsync_dir(path.parent)
    log.warning("%s was missing after an interrupted save; restored %s", path, newest)
    return True
