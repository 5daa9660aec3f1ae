"""The model a service serves, and its atomic swap.

A request reads `ModelHolder.current` once and keeps that `Served` to its end, so a reload swaps
the reference for the next requests while the ones in flight finish on the old model. Several
worker processes (`recs serve --workers N`) share a small pointer file: the worker that reloads
writes the new model's path and version there, and every other worker sees the file change (on
its next request, or within half a second) and loads that model in the background, serving the
old one meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recs.errors import ConfigError
from recs.io import atomic_write_text
from recs.serving.engine import Engine
from recs.serving.onnx_runtime import RuntimeOptions

__all__ = ["ModelHolder", "Served", "load_served", "warm"]

log = logging.getLogger("recs.serving")


@dataclass(frozen=True)
class Served:
    """One loaded model: what a request reads once and keeps to its end."""

    engine: Engine
    version: str | None
    path: Path | None

    @property
    def backend(self) -> str:
        return "torch" if self.engine.runtime is None else "onnx"


def warm(engine: Engine) -> None:
    """One request, so that state built lazily on first use is ready before traffic comes."""
    events = engine.retriever.events
    user = str(events["user_id"][0]) if events.height else None
    engine.recommend(user_id=user, text=None if user else "warm up", k=1, unknown_user="fallback", rerank=False)


def load_served(path: str | Path, runtime: RuntimeOptions | None = None, warmup: bool = True) -> Served:
    """Load an artifact (ONNX export or torch), warmed up when asked."""
    engine = Engine.load(path, runtime=runtime)
    if warmup:
        warm(engine)
    return Served(engine, engine.created, engine.path)


class ModelHolder:
    """The served model: a lock-free read, a serialised swap, and (with `pointer`) the swaps of
    other processes followed."""

    def __init__(
        self,
        served: Served | None,
        runtime: RuntimeOptions | None = None,
        warmup: bool = True,
        pointer: Path | None = None,
    ) -> None:
        self._current = served  # None until `load_in_background` is done
        self.load_error: str | None = None  # why that first load failed
        self._runtime, self._warmup, self._pointer = runtime, warmup, pointer
        self._reload_lock = threading.Lock()  # one load at a time: two would double the memory for nothing
        self._state_lock = threading.Lock()
        self._seen = self._stamp()
        self._following = False
        self.on_swap: list[Callable[[Served], None]] = []  # e.g. the metrics' model info
        self.prepare: list[Callable[[Served], None]] = []  # run on a new model before it is served (the store's replay)
        if pointer is not None:
            # Requests check the pointer too; this follows it in a worker that gets none.
            threading.Thread(target=_watch, args=(weakref.ref(self),), name="recs-model-pointer", daemon=True).start()

    @property
    def current(self) -> Served | None:
        if self._pointer is not None and self._current is not None:
            self._follow()
        return self._current

    def load_in_background(self, path: str | Path) -> threading.Thread:
        """The first model, loaded off the caller's thread (the process answers /health meanwhile)."""

        def load() -> None:
            try:
                with self._reload_lock:
                    self._swap(load_served(path, self._runtime, self._warmup))
            except Exception as err:  # the service stays up, not ready, and says why on /ready
                self.load_error = f"{type(err).__name__}: {err}".splitlines()[0]
                log.error("cannot load the model %s: %s", path, self.load_error)

        thread = threading.Thread(target=load, name="recs-model-load", daemon=True)
        thread.start()
        return thread

    def reload(self, path: str | Path | None) -> tuple[Served, Served]:
        """Load `path` (default: the folder being served) and swap it in; (old, new). A failed
        load raises and leaves the old model served."""
        with self._reload_lock:
            old = self._current
            if old is None:
                raise ConfigError("the first model is still loading (or failed to: see GET /ready)")
            target = Path(path) if path is not None else old.path
            if target is None:
                raise ConfigError("this service was started from an Engine in memory: give the artifact's path")
            new = load_served(target, self._runtime, self._warmup)
            self._swap(new)
            if self._pointer is not None:
                atomic_write_text(self._pointer, json.dumps({"path": str(new.path), "version": new.version}))
                with self._state_lock:
                    self._seen = self._stamp()
            return old, new

    def watch(self, interval_s: float) -> threading.Thread:
        """Reload when the served folder gets a new version (its manifest is replaced: every
        artifact save, `recs refresh`, `recs items upsert`, `recs export` onto it). A version that
        fails to load is logged and the old one kept; the next new version is tried again."""
        thread = threading.Thread(target=_watch_folder, args=(weakref.ref(self), interval_s), name="recs-model-watch", daemon=True)
        thread.start()
        return thread

    def _swap(self, new: Served) -> None:
        for step in self.prepare:
            step(new)
        self._current = new  # one reference assignment: atomic for every reader
        for callback in self.on_swap:
            callback(new)

    def _stamp(self) -> tuple[int, int, int] | None:
        if self._pointer is None:
            return None
        try:
            st = os.stat(self._pointer)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)  # a replaced file has a new inode

    def _follow(self) -> None:
        stamp = self._stamp()
        if stamp == self._seen or stamp is None or self._following:
            return
        with self._state_lock:
            if stamp == self._seen or self._following:
                return
            self._seen = stamp
            try:
                record = json.loads(Path(self._pointer).read_text(encoding="utf-8"))  # type: ignore[arg-type]
            except (OSError, ValueError) as err:
                log.warning("cannot read the shared model pointer %s: %s", self._pointer, err)
                return
            current = self._current
            if current is None or (record.get("path") == str(current.path) and record.get("version") == current.version):
                return
            self._following = True
        threading.Thread(target=self._load_followed, args=(str(record.get("path")),), daemon=True).start()

    def _load_followed(self, path: str) -> None:
        try:
            with self._reload_lock:
                self._swap(load_served(path, self._runtime, self._warmup))
            log.info("followed a reload to %s", path)
        except Exception as err:  # a model another worker loaded fails here: keep serving, say so
            log.warning("could not follow a reload to %s, still serving the previous model: %s", path, err)
        finally:
            self._following = False


def _watch(ref: weakref.ref[ModelHolder], interval_s: float = 0.5) -> None:
    """Follow the pointer while the holder lives (a weak reference: a dropped app is freed)."""
    while True:
        time.sleep(interval_s)
        holder = ref()
        if holder is None:
            return
        if holder._current is not None:
            holder._follow()
        del holder


def _manifest_stamp(folder: Path | None) -> tuple[int, int] | None:
    if folder is None:
        return None
    try:
        st = os.stat(folder / "manifest.json")
    except OSError:
        return None  # mid-swap (the folder is being renamed): look again next time
    return (st.st_ino, st.st_mtime_ns)


def _watch_folder(ref: weakref.ref[ModelHolder], interval_s: float) -> None:
    seen: tuple[int, int] | None = None
    while True:
        holder = ref()
        if holder is None:
            return
        current = holder._current
        stamp = _manifest_stamp(current.path if current is not None else None)
        if seen is None or current is None:
            seen = stamp
        elif stamp is not None and stamp != seen:
            seen = stamp
            try:
                old, new = holder.reload(None)
                log.info("the model folder changed: now serving %s (was %s)", new.version, old.version)
            except Exception as err:  # keep serving the old version, say why
                log.warning("the model folder changed but cannot be loaded, still serving the previous version: %s", err)
        del holder, current
        time.sleep(interval_s)
