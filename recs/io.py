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
`tempfile.mkstemp` / `mkdtemp`; a swapped-in folder has every entry set so (`normalize_modes`),
whatever the library that wrote it or the file it was copied from, so that another account can read
what a trainer wrote.

A write that fails for want of space, size or permission (``ENOSPC``, ``EFBIG``, ``EACCES``...),
also when a library reports it only in its message (polars, safetensors, faiss), is raised as
`PathError` naming the target: `describe_os_error` gives the one line the CLI prints.

Writers of one target exclude each other with `write_lock` (``.<name>.lock`` beside it, `filelock`):
the first entry of a process also restores an interrupted swap and removes what killed writers left
(``.<name>.tmp-*``, ``.<name>.work*``, stale backups), logging each and its size. Readers need no
lock: the swap is atomic.

Only the standard library (and `filelock`, imported when a lock is taken) is used: any module
(`recs.data` included) may import this one.
"""

from __future__ import annotations

import contextlib
import errno as errnos
import logging
import os
import re
import resource
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recs.errors import ArtifactBusyError, ConfigError, RecsError

__all__ = [
    "BACKUP_INFIX",
    "LOCK_TIMEOUT_ENV",
    "PathError",
    "atomic_replace_dir",
    "atomic_write_bytes",
    "atomic_write_file",
    "atomic_write_text",
    "backups_of",
    "clean_stale",
    "describe_os_error",
    "fsync_dir",
    "fsync_file",
    "fsync_tree",
    "leftovers_of",
    "lock_file_of",
    "make_temp_dir",
    "normalize_modes",
    "remove_tree",
    "restore_dir",
    "storage_error",
    "swap_dir_in",
    "work_dir_of",
    "write_lock",
]

log = logging.getLogger(__name__)

BACKUP_INFIX = ".bak-"  # `<target>.bak-<stamp>`: the old folder during a swap

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- errors

# Errors that mean "this place cannot take the write", whoever reports them.
STORAGE_ERRNOS = (errnos.ENOSPC, errnos.EFBIG, errnos.EDQUOT, errnos.EROFS, errnos.EACCES, errnos.EPERM, errnos.EIO)
_WRITE_ONLY_ERRNOS = frozenset({errnos.ENOSPC, errnos.EFBIG, errnos.EDQUOT, errnos.EROFS, errnos.EEXIST})
# Rust's std::io ("os error 27") and Python's own ("[Errno 27]") wording.
_ERRNO_IN_TEXT = re.compile(r"(?:os error|\[errno)\s*(\d+)", re.IGNORECASE)


class PathError(OSError):
    """An OSError about a named path and what was being done to it ("write", "read"); `at`: the
    folder on its way that failed (a file where a folder should be, say)."""

    def __init__(self, code: int, filename: PathLike, action: str = "write", at: PathLike | None = None) -> None:
        super().__init__(code, os.strerror(code), os.fspath(filename))
        self.action = action
        self.at = None if at is None else os.fspath(at)

    def __str__(self) -> str:
        where = f" at {self.at}" if self.at else ""
        return f"cannot {self.action} {self.filename}: {self.strerror} (errno {self.errno}){where}"


def describe_os_error(err: OSError) -> str:
    """One line for any OSError: the path(s), the reason and the errno."""
    if isinstance(err, PathError):
        return str(err)
    reason = err.strerror or str(err) or type(err).__name__
    code = f" (errno {err.errno})" if err.errno else ""
    names = " -> ".join(os.fspath(f) for f in (err.filename, err.filename2) if f is not None)
    if not names:
        return f"{reason}{code}"
    verb = "write" if err.errno in _WRITE_ONLY_ERRNOS else "access"
    return f"cannot {verb} {names}: {reason}{code}"


def _errno_in(exc: BaseException) -> int | None:
    """The errno behind `exc` or its causes, also where only the message gives it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno:
            return current.errno
        text = str(current)
        found = _ERRNO_IN_TEXT.search(text)
        if found:
            return int(found.group(1))
        for code in STORAGE_ERRNOS:
            if os.strerror(code) in text:
                return code
        current = current.__cause__ or current.__context__
    return None


def _full_or_over_limit(scratch: Path) -> int | None:
    """ENOSPC or EFBIG when `scratch` shows it (for writers that report a bare short write)."""
    with contextlib.suppress(OSError):
        if os.statvfs(scratch if scratch.is_dir() else scratch.parent).f_bavail == 0:
            return errnos.ENOSPC
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        files = [scratch] if scratch.is_file() else [p for p in scratch.rglob("*") if p.is_file()]
        with contextlib.suppress(OSError):
            if any(f.stat().st_size >= limit for f in files):
                return errnos.EFBIG
    return None


def storage_error(exc: BaseException, target: PathLike, scratch: PathLike | None = None) -> PathError | None:
    """`exc`, raised while writing `target` (in `scratch`, its temp file or folder), as a
    `PathError` naming `target` when it is a storage failure; None for any other error, and for an
    OSError about some other named path (a file being read, say), which names itself."""
    if isinstance(exc, RecsError | PathError) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, OSError) and exc.filename is not None:
        mine = [os.fspath(p) for p in (target, scratch) if p is not None]
        named = [os.fspath(f) for f in (exc.filename, exc.filename2) if f is not None]  # a copy: source, dest
        if not any(n.startswith(m) for n in named for m in mine):
            return None
    code = _errno_in(exc)
    if code is None and scratch is not None and Path(scratch).exists():
        code = _full_or_over_limit(Path(scratch))
    if code is None or (not isinstance(exc, OSError) and code not in STORAGE_ERRNOS):
        return None
    named = Path(os.fspath(exc.filename)) if isinstance(exc, OSError) and exc.filename is not None else None
    at = named if named is not None and named in Path(target).parents else None
    return PathError(code, target, at=at)


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


def normalize_modes(root: PathLike) -> None:
    """Give every folder and file under `root` (`root` included) the umask's modes, whatever wrote
    or copied them (a copy keeps its source's mode, some libraries write 0600)."""
    dir_mode, file_mode = _dir_mode(), _file_mode()
    os.chmod(root, dir_mode)
    for dirpath, dirs, files in os.walk(root):
        base = Path(dirpath)
        for name in dirs:
            if not (base / name).is_symlink():
                os.chmod(base / name, dir_mode)
        for name in files:
            if not (base / name).is_symlink():
                os.chmod(base / name, file_mode)


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_file(path)
    except OSError as exc:
        failure = storage_error(exc, path, path.parent)
        if failure is None:
            raise
        raise failure from exc
    try:
        write_fn(tmp)
        os.chmod(tmp, _file_mode())  # mkstemp made it 0600
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        failure = storage_error(exc, path, tmp)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if failure is not None:
            raise failure from exc
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as exc:
        failure = storage_error(exc, path, path.parent)
        if failure is None:
            raise
        raise failure from exc
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


def remove_tree(path: PathLike) -> None:
    """Delete a file or folder if it is there (a link is removed, not followed); errors ignored."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


_remove = remove_tree


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
        normalize_modes(tmp)
        fsync_tree(tmp)
        swap_dir_in(tmp, path)
    except BaseException as exc:
        failure = storage_error(exc, path, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if failure is not None:
            raise failure from exc
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


# --------------------------------------------------------------------------- leftovers of killed runs


def work_dir_of(path: PathLike, what: str = "") -> Path:
    """The scratch folder of a run that writes `path`: ``.<name>.work`` (``.<name>.work-<what>``)
    beside it, so that the next writer finds it when a run was killed."""
    path = Path(path)
    return path.parent / (f".{path.name}.work-{what}" if what else f".{path.name}.work")


def leftovers_of(path: PathLike) -> list[Path]:
    """What writers of `path` leave beside it while they run: temp folders, work folders, backups
    of an interrupted swap. Only stale when no writer holds `write_lock(path)`."""
    path = Path(path)
    name = path.name
    try:
        entries = sorted(path.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        e for e in entries
        if e.name.startswith((f".{name}.tmp-", f".{name}.work-", f"{name}{BACKUP_INFIX}")) or e.name == f".{name}.work"
    ]


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(OSError):
            return path.lstat().st_size
        return 0
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_size
    return total


def clean_stale(path: PathLike, complete: Callable[[Path], bool] | None = None) -> int:
    """Restore an interrupted swap of `path`, then remove what killed writers left beside it (each
    logged with its size). Backups are kept while `path` is missing. Call it holding
    `write_lock(path)` (which does). Returns the bytes freed."""
    path = Path(path)
    exists = restore_dir(path, complete)
    freed = 0
    for entry in leftovers_of(path):
        if entry.name.startswith(f"{path.name}{BACKUP_INFIX}") and not exists:
            continue  # the only copy there is: never deleted
        size = _size(entry)
        remove_tree(entry)
        freed += size
        log.warning("removed %s (%.1f MB) left by an interrupted run", entry, size / 1e6)
    return freed


# --------------------------------------------------------------------------- one writer at a time

LOCK_TIMEOUT_ENV = "RECS_LOCK_TIMEOUT"  # seconds a writer waits for another to finish
DEFAULT_LOCK_TIMEOUT_S = 10.0


@dataclass
class _Hold:
    """This process's hold on one lock file: threads take `thread_lock` (re-entrant), the first
    entry takes the file lock (other processes)."""

    thread_lock: threading.RLock
    file_lock: Any = None
    depth: int = 0


_holds: dict[str, _Hold] = {}
_holds_guard = threading.Lock()


def lock_file_of(path: PathLike) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def _lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_LOCK_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None


def _busy(path: Path, lock_file: Path) -> ArtifactBusyError:
    return ArtifactBusyError(
        f"{path} is being written by another recs process (lock {lock_file.name}); try again when it finishes"
    )


@contextlib.contextmanager
def write_lock(
    path: PathLike, timeout: float | None = None, complete: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Hold the one-writer lock of `path` (``.<name>.lock`` beside it) for a whole
    read-modify-write. Re-entrant within a thread; other threads and processes wait up to
    `timeout` seconds (default: $RECS_LOCK_TIMEOUT, else 10), then `ArtifactBusyError`. The
    outermost entry cleans what killed writers left (`clean_stale`, with `complete`)."""
    import filelock

    path = Path(path).absolute()
    lock_file = lock_file_of(path)
    wait = _lock_timeout() if timeout is None else max(0.0, timeout)
    started = time.monotonic()
    with _holds_guard:
        hold = _holds.setdefault(os.fspath(lock_file), _Hold(threading.RLock()))
    if not hold.thread_lock.acquire(timeout=wait):
        raise _busy(path, lock_file)
    try:
        if hold.depth == 0:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                flock = filelock.FileLock(os.fspath(lock_file), thread_local=False)
                flock.acquire(timeout=max(0.0, wait - (time.monotonic() - started)))
            except filelock.Timeout:
                raise _busy(path, lock_file) from None
            except OSError as exc:
                failure = storage_error(exc, path, path.parent)
                if failure is None:
                    raise
                raise failure from exc
            hold.file_lock = flock
        hold.depth += 1
        try:
            if hold.depth == 1:
                clean_stale(path, complete)
            yield path
        finally:
            hold.depth -= 1
            if hold.depth == 0:
                hold.file_lock.release()
                hold.file_lock = None
    finally:
        hold.thread_lock.release()
