"""Vector shards: item vectors in numbered files, written in parts by any number of workers.

A shard folder holds ``shard-00000.npy`` (float32, n x dim) + ``shard-00000.ids.json`` (the n
item ids, in the same order) per shard, and ``manifest.json`` (format, model, dim, count, whether
the vectors are L2-normalised, the shards in order), written last and atomically: a folder
without one is half-written and every reader refuses it. Shard k holds the catalog rows
``[k * shard_rows, (k + 1) * shard_rows)``, so the shards concatenated are the catalog in order.
No pickle anywhere (``np.load(allow_pickle=False)``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from recs.errors import ArtifactError
from recs.io import atomic_write_file, atomic_write_text, remove_tree

__all__ = ["MANIFEST", "SHARD_FORMAT", "ShardManifest", "iter_shards", "read_manifest", "sample_vectors",
           "shard_name", "start_folder", "write_manifest", "write_shard"]

SHARD_FORMAT = 1
MANIFEST = "manifest.json"
NORM_TOLERANCE = 1e-3  # |norm - 1| below it: the towers' L2-normalised output


def shard_name(number: int) -> str:
    return f"shard-{number:05d}"


def start_folder(folder: Path) -> None:
    """An empty-of-shards folder: the old manifest goes first (the folder reads as half-written
    from then on), then the old shard files; other files are left alone."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_tree(folder / MANIFEST)
    for path in folder.glob("shard-*"):
        remove_tree(path)


def write_shard(folder: Path, number: int, item_ids: list[str], vectors: np.ndarray) -> dict[str, Any]:
    """One shard's two files (each atomic); its manifest entry."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
        raise ArtifactError(f"shard {number}: {len(item_ids)} ids but vectors of shape {vectors.shape}")
    name = shard_name(number)
    atomic_write_file(folder / f"{name}.npy", lambda tmp: np.save(tmp, vectors, allow_pickle=False))
    atomic_write_text(folder / f"{name}.ids.json", json.dumps(item_ids, ensure_ascii=False))
    norms = np.linalg.norm(vectors, axis=1)
    return {"name": name, "count": len(item_ids), "dim": int(vectors.shape[1]),
            "normalised": bool(np.all(np.abs(norms - 1.0) < NORM_TOLERANCE))}


class ShardManifest:
    """A shard folder's manifest, checked."""

    def __init__(self, folder: Path, data: dict[str, Any]) -> None:
        self.folder = folder
        self.data = data
        self.dim = int(data["dim"])
        self.count = int(data["count"])
        self.normalised = bool(data["normalised"])
        self.shards: list[dict[str, Any]] = list(data["shards"])
        self.ids_sha256 = str(data["ids_sha256"])
        self.model: dict[str, Any] = dict(data.get("model") or {})


def ids_digest(item_ids: list[str]) -> str:
    """The catalog the shards hold, in order, as one hash (a catalog check without the ids)."""
    return hashlib.sha256("\n".join(item_ids).encode("utf-8")).hexdigest()


def write_manifest(folder: Path, entries: list[dict[str, Any]], item_ids: list[str], model: dict[str, Any]) -> ShardManifest:
    """The manifest, last and atomically: the shards (sorted by number) are complete."""
    entries = sorted(entries, key=lambda e: e["name"])
    dims = {e["dim"] for e in entries}
    if len(dims) != 1:
        raise ArtifactError(f"{folder}: shards of different dims {sorted(dims)}")
    count = sum(e["count"] for e in entries)
    if count != len(item_ids):
        raise ArtifactError(f"{folder}: the shards hold {count} vectors for {len(item_ids)} items")
    data = {"format": SHARD_FORMAT, "model": model, "dim": dims.pop(), "count": count,
            "normalised": all(e["normalised"] for e in entries), "ids_sha256": ids_digest(item_ids),
            "shards": [{"name": e["name"], "count": e["count"]} for e in entries]}
    atomic_write_text(folder / MANIFEST, json.dumps(data, indent=2) + "\n")
    return ShardManifest(folder, data)


def read_manifest(folder: str | Path) -> ShardManifest:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST}: not a shard folder, or `recs encode` did not finish writing it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or int(data.get("format", 0)) > SHARD_FORMAT:
            raise ValueError(f"format {data.get('format') if isinstance(data, dict) else data!r} is not one this recs reads")
        manifest = ShardManifest(folder, data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: invalid shard manifest ({exc})") from exc
    if sum(int(s["count"]) for s in manifest.shards) != manifest.count:
        raise ArtifactError(f"{path}: the shard counts do not add up to {manifest.count}")
    return manifest


def _read_shard(manifest: ShardManifest, entry: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    base = manifest.folder / str(entry["name"])
    try:
        vectors = np.load(base.with_name(base.name + ".npy"), allow_pickle=False)
        ids = json.loads(base.with_name(base.name + ".ids.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{base}: unreadable shard ({exc})") from exc
    if vectors.shape != (int(entry["count"]), manifest.dim) or not isinstance(ids, list) or len(ids) != len(vectors):
        raise ArtifactError(f"{base}: shape {vectors.shape} and {len(ids)} ids, the manifest says {entry['count']} x {manifest.dim}")
    return [str(i) for i in ids], vectors.astype(np.float32, copy=False)


def iter_shards(manifest: ShardManifest) -> Iterator[tuple[list[str], np.ndarray]]:
    """(item ids, vectors) per shard, in order; one shard in memory at a time."""
    for entry in manifest.shards:
        yield _read_shard(manifest, entry)


def sample_vectors(manifest: ShardManifest, size: int, seed: int = 0) -> np.ndarray:
    """`size` vectors drawn without replacement (seeded), in catalog order; all of them when
    there are no more (so a small catalog trains exactly as when built from the whole matrix)."""
    n = manifest.count
    chosen = np.arange(n) if size >= n else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    out = np.empty((len(chosen), manifest.dim), dtype=np.float32)
    start = filled = 0
    for _, vectors in iter_shards(manifest):
        stop = start + len(vectors)
        lo, hi = np.searchsorted(chosen, [start, stop])
        out[filled : filled + hi - lo] = vectors[chosen[lo:hi] - start]
        filled += hi - lo
        start = stop
    return out
