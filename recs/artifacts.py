"""Artifact folders: manifest, checksums, atomic saves, safe loads.

An artifact is a plain folder::

    my-model/
      manifest.json          written last
      <any files>            weights as safetensors, arrays as .npy, FAISS indexes, JSON

``manifest.json`` holds::

    {"format_version": 1, "recs_version": "0.1.0",
     "library_versions": {"numpy": "2.4.6", ...},
     "created": "2026-11-28T12:00:00Z",
     "components": {"<name>": {"kind": "<kind>", "files": ["<relpath>", ...], "config": {...}}},
     "files": {"<relpath>": "<sha256 hex>", ...}}

Writing (`ArtifactWriter`) happens in a temporary folder beside the target; on
success every file is hashed and fsynced, ``manifest.json`` is written last,
and the temporary folder is swapped in with two renames (`recs.io.swap_dir_in`):

1. ``final`` -> ``final.bak-<stamp>`` (only when ``final`` already exists),
2. ``temp``  -> ``final``,

then the backup is deleted. A crash at any point leaves a loadable artifact:
before step 1 the old one is untouched at ``final``; between steps 1 and 2 the
old one sits at ``final.bak-<stamp>`` and `open_artifact(final)` renames it
back (the newest backup wins); after step 2 the new one is at ``final`` and a
leftover backup is only stale (the next successful save removes it). The
temporary folder (``.final.tmp-*``) of a crashed save is never loaded; the next
writer of ``final`` deletes it (and any stale backup), logging its size.

Writers of one artifact exclude each other: `artifact_lock` (``.final.lock``
beside it) is held by every `ArtifactWriter` and, around a whole
read-modify-write, by the commands that update an artifact; a second writer
waits a little, then gets `ArtifactBusyError`. Readers take no lock. Every
file and folder gets the modes of the umask (0644/0755 under umask 022).

Loading (`open_artifact`) verifies the folder, the format version, the sha256
of every file, that no file exists that the manifest does not list, that no
file is a pickle (by suffix or by content), and that every component kind is
known. Configs are plain JSON data: nothing is ever imported, evaluated or
unpickled from an artifact. A file that passes these checks but cannot be
parsed (a corrupt index whose checksum was updated to match, say) raises
ArtifactError naming it: every reader goes through `read_artifact_file`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np

from recs.errors import ArtifactError, ConfigError, RecsError
from recs.io import (
    backups_of,
    fsync_tree,
    make_temp_dir,
    normalize_modes,
    restore_dir,
    storage_error,
    swap_dir_in,
    write_lock,
)

T = TypeVar("T")

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "KNOWN_COMPONENT_KINDS",
    "MANIFEST_NAME",
    "PICKLE_SUFFIXES",
    "Artifact",
    "ArtifactWriter",
    "Component",
    "artifact_lock",
    "open_artifact",
    "read_artifact_file",
    "refuse_non_artifact_target",
    "register_component_kind",
]

ARTIFACT_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

# Every kind of component an artifact may hold, in one place.
KNOWN_COMPONENT_KINDS: set[str] = {
    "two_tower",
    "item_index",
    "catalog",
    "interactions",
    "ranker",
    "cross_encoder",
    "rank_options",
    "set_scorer",
    "onnx",
    "baseline",
    "config",
}

PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".ckpt"})

# Libraries whose versions are recorded (those installed). Read from package
# metadata: nothing is imported, torch least of all.
_TRACKED_DISTRIBUTIONS = (
    "numpy",
    "faiss-cpu",
    "faiss-gpu",
    "faiss-gpu-cu12",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "onnxruntime",
    "onnxruntime-gpu",
    "polars",
    "scikit-learn",
    "lightgbm",
    "peft",
)

_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def register_component_kind(kind: str) -> str:
    """Allow a new component kind in artifacts (lower snake_case). Returns the kind."""
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise ConfigError(f"component kind must be lower snake_case, got {kind!r}")
    KNOWN_COMPONENT_KINDS.add(kind)
    return kind


@dataclass(frozen=True)
class Component:
    """One named part of an artifact (a model, an index, a catalog...)."""

    name: str
    kind: str
    files: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "files": list(self.files), "config": self.config}


# --------------------------------------------------------------------------- helpers


def _utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _recs_version() -> str:
    try:
        return metadata.version("recs")
    except metadata.PackageNotFoundError:
        return "unknown"


def _library_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for dist in _TRACKED_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _check_relpath(relpath: str | os.PathLike[str], *, what: str = "path") -> str:
    """Normalise a path inside an artifact to POSIX form; refuse escapes."""
    raw = os.fspath(relpath)
    if not isinstance(raw, str) or not raw or "\\" in raw or "\x00" in raw:
        raise ArtifactError(f"invalid {what} in artifact: {raw!r}")
    pure = PurePosixPath(raw)
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts):
        raise ArtifactError(f"{what} must be relative and stay inside the artifact: {raw!r}")
    norm = pure.as_posix()
    if norm in (".", ""):
        raise ArtifactError(f"invalid {what} in artifact: {raw!r}")
    return norm.removeprefix("./")


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _list_files(root: Path) -> list[str]:
    """Every regular file under root as sorted POSIX relpaths; refuses links and specials."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in list(dirnames):
            if (base / name).is_symlink():
                rel = (base / name).relative_to(root).as_posix()
                raise ArtifactError(f"artifact {root} contains a symbolic link: {rel}")
        for name in filenames:
            full = base / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                raise ArtifactError(f"artifact {root} contains a symbolic link: {rel}")
            if not full.is_file():
                raise ArtifactError(f"artifact {root} contains a non-regular file: {rel}")
            found.append(rel)
    return sorted(found)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9 or head[8:9] != b"{":
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 2 <= header_len <= size - 8


def _pickle_reason(path: Path, rel: str) -> str | None:
    """Why this file counts as a pickle (or could unpickle on load), else None."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return f"suffix {path.suffix!r} is a pickle/torch-checkpoint format"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(16)
    # Pickle protocol 2+ starts with PROTO (0x80) and the protocol number; the next
    # byte is an opcode, never 0x00. A safetensors header length can start with the
    # same two bytes, so a valid safetensors header is excluded explicitly.
    if (
        len(head) >= 3
        and head[0] == 0x80
        and 2 <= head[1] <= 5
        and head[2] != 0
        and not _looks_like_safetensors(head, size)
    ):
        return f"content starts with a pickle protocol {head[1]} header"
    if head.startswith(b"\x93NUMPY"):
        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    dtype = np.lib.format.read_array_header_1_0(fh)[2]
                else:
                    dtype = np.lib.format.read_array_header_2_0(fh)[2]
        except Exception as exc:
            return f"unreadable .npy header ({exc})"
        if dtype.hasobject:
            return "a .npy array of Python objects (stored as pickles)"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    if PurePosixPath(member).suffix.lower() in (".pkl", ".pickle"):
                        return f"a zip archive holding the pickle {member!r} (torch.save format)"
        except zipfile.BadZipFile:
            pass
    return None


def _check_no_pickles(root: Path, relpaths: Iterable[str]) -> None:
    for rel in relpaths:
        reason = _pickle_reason(root / rel, rel)
        if reason is not None:
            raise ArtifactError(
                f"artifact {root} holds a refused file {rel!r}: {reason}; "
                "artifacts never contain pickles (use safetensors, .npy, JSON or Parquet)"
            )


def _dump_json(obj: Any, *, what: str) -> str:
    try:
        return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not plain JSON data: {exc}") from exc


def _has_manifest(folder: Path) -> bool:
    return (folder / MANIFEST_NAME).is_file()


def refuse_non_artifact_target(target: str | os.PathLike[str]) -> None:
    """ArtifactError unless an artifact may be saved at `target`: absent, an empty folder, or an
    artifact folder (replaced). Never a file, a link, or a folder of other files."""
    target = Path(target).absolute()
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ArtifactError(f"refusing to replace {target}: it is not a folder")
    if target.is_dir() and not _has_manifest(target) and any(target.iterdir()):
        raise ArtifactError(
            f"refusing to replace {target}: it is a non-empty folder that is not an artifact"
        )


@contextmanager
def artifact_lock(
    path: str | os.PathLike[str], *, create: bool = True, timeout: float | None = None
) -> Iterator[Path]:
    """Hold the writer lock of the artifact at `path` (``.<name>.lock``, `recs.io.write_lock`)
    around a whole read-modify-write, after checking the target before any work: `create` allows
    a new artifact (refusing a file or a non-artifact folder); otherwise it must exist. The first
    hold cleans what killed writers left beside it. Re-entrant: `ArtifactWriter` takes it too."""
    target = Path(path).absolute()
    if create:
        refuse_non_artifact_target(target)
    elif not (target.is_dir() or backups_of(target)):
        what = "is not a folder" if target.exists() else "not found"
        raise ArtifactError(f"artifact folder {what}: {target}")
    with write_lock(target, timeout=timeout, complete=_has_manifest):
        yield target


def read_artifact_file(path: Path, kind: str, reader: Callable[[Path], T]) -> T:
    """`reader(path)`, any failure of the library that parses it (a corrupt file whose checksum
    was updated to match, say) raised as ArtifactError naming the file: the one place every
    reader of an artifact file kind goes through."""
    try:
        return reader(path)
    except RecsError:
        raise
    except (Exception, MemoryError) as exc:  # a corrupt header may ask for any allocation
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ArtifactError(
            f"{path}: unreadable {kind} file ({detail}); the artifact is damaged: restore or rebuild it"
        ) from exc


# --------------------------------------------------------------------------- writing


class ArtifactWriter:
    """Write an artifact atomically.

    >>> with ArtifactWriter("out/model") as w:            # doctest: +SKIP
    ...     w.write_safetensors("tower.safetensors", {"w": weights})
    ...     w.add_component("tower", "two_tower", files=["tower.safetensors"], config={...})

    Files are written into `w.path`, a temporary folder beside the target (same
    filesystem); any file may also be written there directly. On a normal exit
    the manifest is written last and the folder swapped in (see module doc). On
    an exception the temporary folder is deleted and the target is untouched.

    `base=` starts from an existing artifact (often the target itself): its files
    are copied in and its components kept, so a later stage can add a component.
    A component's `files` may name a folder (e.g. ``"index"``): every file under it
    at save time then belongs to the component.
    """

    def __init__(
        self, final_dir: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None
    ):
        self.final_dir = Path(final_dir).absolute()
        self.base = Path(base).absolute() if base is not None else None
        self._path: Path | None = None
        self._components: dict[str, dict[str, Any]] = {}
        self._base_created: str | None = None
        self._lock = ExitStack()
        self.manifest: dict[str, Any] | None = None

    # -- context manager
    def __enter__(self) -> ArtifactWriter:
        self._lock.enter_context(artifact_lock(self.final_dir))
        try:
            self._path = make_temp_dir(self.final_dir)  # beside the target, same filesystem
            if self.base is not None:
                self._copy_base(open_artifact(self.base))
        except BaseException as exc:
            self._abort(exc)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        temp = self._path
        if temp is None:
            self._lock.close()
            return False
        if exc is not None:
            self._abort(exc)
            return False
        try:
            self._finalize(temp)
        except BaseException as err:
            self._abort(err)
            raise
        finally:
            self._path = None
            self._lock.close()
        return False

    def _abort(self, exc: BaseException) -> None:
        """Delete the temp folder, release the lock, and re-raise a full disk, a file-size limit
        or a refused write as one `PathError` naming the target."""
        temp, self._path = self._path, None
        failure = storage_error(exc, self.final_dir, temp)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        self._lock.close()
        if failure is not None:
            raise failure from exc

    @property
    def path(self) -> Path:
        """The temporary folder being written (only inside the `with` block)."""
        if self._path is None:
            raise ArtifactError("ArtifactWriter.path is only available inside its `with` block")
        return self._path

    @property
    def components(self) -> dict[str, Component]:
        return {
            n: Component(n, c["kind"], tuple(c["files"]), c["config"])
            for n, c in self._components.items()
        }

    # -- writing helpers
    def file(self, relpath: str | os.PathLike[str]) -> Path:
        """Absolute path for `relpath` inside the temp folder; parent folders are created."""
        rel = _check_relpath(relpath)
        if rel == MANIFEST_NAME:
            raise ArtifactError(f"{MANIFEST_NAME} is written by ArtifactWriter itself")
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()  # never write through a link into another artifact's file
        return target

    def write_json(self, relpath: str, obj: Any) -> Path:
        text = _dump_json(obj, what=f"JSON for {relpath!r}")
        target = self.file(relpath)
        target.write_text(text + "\n", encoding="utf-8")
        return target

    def write_npy(self, relpath: str, array: np.ndarray) -> Path:
        arr = np.asarray(array)
        if arr.dtype.hasobject:
            raise ArtifactError(f"{relpath!r}: object arrays would be stored as pickles; refused")
        target = self.file(relpath)
        with open(target, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        return target

    def write_safetensors(
        self,
        relpath: str,
        tensors: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
    ) -> Path:
        """Save numpy arrays and/or torch tensors (torch used only if a tensor is given)."""
        target = self.file(relpath)
        meta = dict(metadata) if metadata else None
        if any(_is_torch_tensor(v) for v in tensors.values()):
            import torch
            from safetensors.torch import save_file as save_pt

            out = {
                k: (
                    v.detach().cpu() if _is_torch_tensor(v) else torch.from_numpy(np.asarray(v))
                ).contiguous()
                for k, v in tensors.items()
            }
            save_pt(out, str(target), metadata=meta)
        else:
            from safetensors.numpy import save_file as save_np

            out_np = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
            save_np(out_np, str(target), metadata=meta)
        return target

    # -- components
    def add_component(
        self,
        name: str,
        kind: str,
        files: Iterable[str | os.PathLike[str]] = (),
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ArtifactError(f"invalid component name {name!r} (letters, digits, _ . -)")
        if name in self._components:
            raise ArtifactError(
                f"component {name!r} already exists in this artifact; remove_component() it first"
            )
        if kind not in KNOWN_COMPONENT_KINDS:
            raise ArtifactError(
                f"unknown component kind {kind!r}; known: {sorted(KNOWN_COMPONENT_KINDS)} "
                "(register_component_kind() adds one)"
            )
        if isinstance(files, str | os.PathLike):
            files = [files]
        rels = [_check_relpath(f, what="component file") for f in files]
        cfg = dict(config or {})
        json.loads(_dump_json(cfg, what=f"config of component {name!r}"))  # plain data only
        self._components[name] = {"kind": kind, "files": rels, "config": cfg}

    def remove_component(self, name: str, *, delete_files: bool = True) -> None:
        """Drop a component (e.g. one carried over from `base` to be replaced)."""
        comp = self._components.pop(name, None)
        if comp is None:
            raise ArtifactError(f"no component {name!r} to remove; has {sorted(self._components)}")
        if not delete_files:
            return
        still_used = {f for c in self._components.values() for f in self._expand(c["files"])}
        for rel in self._expand(comp["files"]):
            if rel not in still_used:
                (self.path / rel).unlink(missing_ok=True)

    # -- internals
    def _refuse_non_artifact_target(self) -> None:
        refuse_non_artifact_target(self.final_dir)

    def _copy_base(self, base: Artifact) -> None:
        for rel in base.manifest["files"]:
            dst = self.path / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base.path / rel, dst)
        for comp in base.components.values():
            self._components[comp.name] = {
                "kind": comp.kind,
                "files": list(comp.files),
                "config": json.loads(json.dumps(comp.config)),
            }
        self._base_created = base.manifest.get("created")

    def _expand(self, rels: Iterable[str]) -> list[str]:
        out: list[str] = []
        for rel in rels:
            full = self.path / rel
            if full.is_dir():
                out.extend(f"{rel}/{sub}" for sub in _list_files(full))
            else:
                out.append(rel)
        return out

    def _finalize(self, temp: Path) -> None:
        stray = temp / MANIFEST_NAME
        if stray.exists():
            stray.unlink()
        relpaths = _list_files(temp)
        existing = set(relpaths)
        components: dict[str, Any] = {}
        for name, comp in self._components.items():
            files = self._expand(comp["files"])
            missing = [f for f in files if f not in existing]
            if missing or (not files and comp["files"]):
                raise ArtifactError(
                    f"component {name!r} lists files that were not written: {missing}"
                )
            components[name] = {"kind": comp["kind"], "files": files, "config": comp["config"]}
        _check_no_pickles(temp, relpaths)
        hashes = {rel: _sha256(temp / rel) for rel in relpaths}
        manifest = {
            "format_version": ARTIFACT_FORMAT_VERSION,
            "recs_version": _recs_version(),
            "library_versions": _library_versions(),
            "created": _utc_now(),
            "components": components,
            "files": hashes,
        }
        if self._base_created:
            manifest["extends_created"] = self._base_created
        manifest_path = temp / MANIFEST_NAME
        manifest_path.write_text(_dump_json(manifest, what="manifest") + "\n", encoding="utf-8")
        normalize_modes(temp)  # copies keep their source's mode; some libraries write 0600
        fsync_tree(temp)
        self._refuse_non_artifact_target()
        swap_dir_in(temp, self.final_dir)
        self.manifest = manifest


def _is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


# --------------------------------------------------------------------------- reading


class Artifact:
    """A verified artifact folder. Build with `open_artifact`."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self.components: dict[str, Component] = {
            name: Component(name, c["kind"], tuple(c["files"]), dict(c.get("config") or {}))
            for name, c in manifest["components"].items()
        }

    def __repr__(self) -> str:
        return f"Artifact({str(self.path)!r}, components={sorted(self.components)})"

    @property
    def format_version(self) -> int:
        return int(self.manifest["format_version"])

    @property
    def recs_version(self) -> str:
        return str(self.manifest.get("recs_version", "unknown"))

    @property
    def created(self) -> str | None:
        return self.manifest.get("created")

    @property
    def files(self) -> list[str]:
        return list(self.manifest["files"])

    def has_component(self, name: str) -> bool:
        return name in self.components

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            raise ArtifactError(
                f"artifact {self.path} has no component {name!r}; it has {sorted(self.components)}"
            ) from None

    def components_of_kind(self, kind: str) -> list[Component]:
        return [c for c in self.components.values() if c.kind == kind]

    def file(self, relpath: str | os.PathLike[str]) -> Path:
        """Path of a file listed in the manifest (or of a folder holding listed files)."""
        rel = _check_relpath(relpath)
        files = self.manifest["files"]
        if rel in files or any(f.startswith(rel + "/") for f in files):
            return self.path / rel
        raise ArtifactError(f"artifact {self.path} has no file {rel!r}")

    def read_json(self, relpath: str) -> Any:
        return read_artifact_file(
            self.file(relpath), "JSON", lambda p: json.loads(p.read_text(encoding="utf-8"))
        )

    def read_npy(self, relpath: str) -> np.ndarray:
        return read_artifact_file(self.file(relpath), ".npy", _load_npy)

    def read_parquet(self, relpath: str) -> Any:
        """A Parquet file as a polars DataFrame."""
        import polars as pl

        return read_artifact_file(self.file(relpath), "Parquet", pl.read_parquet)

    def read_safetensors(
        self, relpath: str, framework: str = "np", device: str = "cpu"
    ) -> dict[str, Any]:
        if framework in ("np", "numpy"):
            from safetensors.numpy import load_file as load_np

            return read_artifact_file(self.file(relpath), "safetensors", load_np)
        if framework in ("pt", "torch"):
            from safetensors.torch import load_file as load_pt

            return read_artifact_file(
                self.file(relpath), "safetensors", lambda p: load_pt(p, device=device)
            )
        raise ConfigError(f"framework must be 'np' or 'pt', got {framework!r}")


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":  # else np.load reports a pickle and how to load it unsafely
            raise ValueError("no .npy header")
    return np.load(path, allow_pickle=False)


def open_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Open and verify an artifact folder; raise ArtifactError if anything is off.

    If `path` is missing but a `<path>.bak-*` folder left by an interrupted save
    exists, the newest such backup is renamed back to `path` first.
    """
    root = Path(path).absolute()
    if not restore_dir(root, complete=lambda backup: (backup / MANIFEST_NAME).is_file()):
        raise ArtifactError(f"artifact folder not found: {root}")
    if not root.is_dir():
        raise ArtifactError(f"artifact path is not a folder: {root}")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{root} has no {MANIFEST_NAME}: not an artifact, or an unfinished save"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path}: manifest must be a JSON object")

    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{manifest_path}: invalid format_version {version!r}")
    if version > ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {root} has format version {version}, newer than this recs "
            f"({_recs_version()}) reads (<= {ARTIFACT_FORMAT_VERSION}); upgrade recs"
        )

    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{manifest_path}: 'files' must be an object of relpath -> sha256")
    for rel, digest in files.items():
        if _check_relpath(rel, what="manifest file") != rel or rel == MANIFEST_NAME:
            raise ArtifactError(f"{manifest_path}: invalid file entry {rel!r}")
        if not isinstance(digest, str) or not _SHA_RE.match(digest):
            raise ArtifactError(f"{manifest_path}: invalid sha256 for {rel!r}")

    components = manifest.get("components")
    if not isinstance(components, dict):
        raise ArtifactError(f"{manifest_path}: 'components' must be an object")
    for name, comp in components.items():
        if not isinstance(comp, dict):
            raise ArtifactError(f"{manifest_path}: component {name!r} must be an object")
        kind = comp.get("kind")
        if kind not in KNOWN_COMPONENT_KINDS:
            raise ArtifactError(
                f"artifact {root}: component {name!r} has unknown kind {kind!r} "
                f"(known: {sorted(KNOWN_COMPONENT_KINDS)}); refusing to load it"
            )
        comp_files = comp.get("files", [])
        if not isinstance(comp_files, list) or any(f not in files for f in comp_files):
            raise ArtifactError(
                f"artifact {root}: component {name!r} lists files missing from the manifest"
            )
        if not isinstance(comp.get("config", {}), dict):
            raise ArtifactError(f"artifact {root}: component {name!r} config must be an object")

    present = [rel for rel in _list_files(root) if rel != MANIFEST_NAME]
    _check_no_pickles(root, present)  # before anything else reads a byte of them
    extra = sorted(set(present) - set(files))
    if extra:
        raise ArtifactError(
            f"artifact {root} holds files its manifest does not list: {extra}; refusing to load"
        )
    missing = sorted(set(files) - set(present))
    if missing:
        raise ArtifactError(f"artifact {root} is missing files listed in its manifest: {missing}")
    for rel, digest in files.items():
        if _sha256(root / rel) != digest:
            raise ArtifactError(
                f"artifact {root}: checksum mismatch for {rel!r} (corrupted or modified)"
            )
    return Artifact(root, manifest)
