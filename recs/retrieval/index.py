"""`ItemIndex`: a FAISS index over item vectors with string ids, metadata filters and updates.

Scores are inner products of L2-normalised float32 vectors (cosine similarity).

Kinds
-----
``flat``   exact (`IndexIDMap2(IndexFlatIP)`); searched on GPU when faiss has one.
``hnsw``   `IndexIDMap2(IndexHNSWFlat)`, M=32, efConstruction=200, efSearch 128 by default.
           FAISS cannot remove from HNSW graphs, so `remove` leaves a tombstone that every
           search excludes through an IDSelector; `compact()` rebuilds without them (run
           automatically once tombstones exceed `compact_threshold` of the index).
``ivfpq``  `IndexIVFPQ` over a flat inner-product quantizer (nlist ~ 4*sqrt(n), `pq_m`
           sub-quantizers of 8 bits, trained on the first vectors added), with its own ids
           and a hashtable direct map (remove / reconstruct). PQ codes alone rank poorly
           (recall@10 ~ 0.7), so by default `refine_factor * k` candidates are re-scored
           with an 8-bit scalar-quantised copy of the vectors (`refine="sq8"`; also
           ``"fp16"``, ``"flat"`` or None) by FAISS's own `IndexRefine`. That copy is stored
           by int id (row i = int id i), so a removed or updated item leaves a dead row
           there; `compact()` drops them (automatically past `compact_threshold`),
           renumbering the int ids. Below `IVFPQ_MIN_ITEMS` items it falls back to flat
           (see `notes`).
``auto``   flat below 50k items, hnsw below 1M, ivfpq above (decided at the first `add`).

Ids: every added item gets a fresh int64 id (`update` too); int ids are never reused, so
a tombstone can never hide a newer vector. Filters (category prefix, in stock, excluded
items, tombstones) run inside FAISS as IDSelectors (bitmap over int ids, AND NOT a batch of
excluded ids). When a filter leaves at most `exact_search_below` items, those items are
scored exactly instead (an approximate index would find few of them). FAISS's -1 padding
never reaches the caller.

`save(dir)` writes ``index.faiss`` (+ ``refine.faiss`` for ivfpq with refine), ``ids.json``
and ``index_config.json``: no pickles.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recs import device
from recs.data import category as category_rule
from recs.errors import ArtifactError, ConfigError, UnknownItemError

__all__ = ["INDEX_FORMAT_VERSION", "INDEX_KINDS", "IVFPQ_MIN_ITEMS", "ItemIndex"]

log = logging.getLogger(__name__)

INDEX_FORMAT_VERSION = 1
INDEX_KINDS = ("flat", "hnsw", "ivfpq", "auto")
AUTO_FLAT_BELOW = 50_000
AUTO_HNSW_BELOW = 1_000_000
IVFPQ_MIN_ITEMS = 1_000  # fewer items cannot train 256 PQ centroids + a useful IVF
REFINE_KINDS = ("sq8", "fp16", "flat")
GPU_MAX_K = 2048  # faiss GPU k-selection limit

INDEX_FILE = "index.faiss"
REFINE_FILE = "refine.faiss"
IDS_FILE = "ids.json"
CONFIG_FILE = "index_config.json"


_norm_category = category_rule.normalise


def _as_str_ids(item_ids: Iterable[Any], what: str = "item id") -> list[str]:
    if isinstance(item_ids, str):
        item_ids = [item_ids]
    out = []
    for x in item_ids:
        if not isinstance(x, str):
            raise ConfigError(f"{what}s must be strings, got {x!r} ({type(x).__name__})")
        out.append(str(x))
    return out


def _pick_pq_m(dim: int) -> int:
    """Sub-quantizer count: divides dim, sub-vectors of about 4 dims."""
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(dim / m - 4), -m))


def _store_codes(store: Any) -> np.ndarray:
    """A flat-codes store's (SQ or flat) codes, one row per stored vector."""
    return faiss.vector_to_array(store.codes).reshape(int(store.ntotal), int(store.code_size))


def _store_with_codes(template: Any, codes: np.ndarray) -> Any:
    """A store trained like `template` holding exactly `codes` (rows in order)."""
    store = faiss.clone_index(template)
    store.reset()
    if len(codes):
        store.add_sa_codes(np.ascontiguousarray(codes))
    return store


class ItemIndex:
    """Nearest-item search over normalised item vectors (see module doc)."""

    def __init__(
        self,
        dim: int,
        kind: str = "auto",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        pq_m: int | None = None,
        nbits: int = 8,
        nprobe: int | None = None,
        refine: str | None = "sq8",
        refine_factor: int = 4,
        exact_search_below: int = 2048,
        compact_threshold: float | None = 0.3,
        use_gpu: bool | None = None,
    ):
        if not isinstance(dim, int) or dim <= 0:
            raise ConfigError(f"index dim must be a positive int, got {dim!r}")
        if kind not in INDEX_KINDS:
            raise ConfigError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        if pq_m is not None and (pq_m <= 0 or dim % pq_m):
            raise ConfigError(f"pq_m={pq_m} must divide the vector dim {dim}")
        if refine is not None and refine not in REFINE_KINDS:
            raise ConfigError(f"refine must be one of {REFINE_KINDS} or None, got {refine!r}")
        for name, value in (
            ("hnsw_m", hnsw_m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
            ("nbits", nbits),
            ("refine_factor", refine_factor),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if compact_threshold is not None and not 0 < compact_threshold <= 1:
            raise ConfigError(
                f"compact_threshold must be in (0, 1] or None, got {compact_threshold}"
            )
        self.dim = dim
        self.requested_kind = kind
        self.kind: str | None = None if kind in ("auto", "ivfpq") else kind
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.nlist = nlist
        self.pq_m = pq_m
        self.nbits = nbits
        self.nprobe = nprobe
        self.refine = refine
        self.refine_factor = refine_factor
        self.exact_search_below = int(exact_search_below)
        self.compact_threshold = compact_threshold
        self.use_gpu = use_gpu
        self.notes: list[str] = []

        self._index: Any = None  # faiss index (CPU)
        self._refine_index: Any = None  # ivfpq re-scoring store, row = int id (SQ or flat)
        self._refiner: tuple[Any, Any, Any] | None = None  # (IndexRefine, its base, its store)
        self._id_to_int: dict[str, int] = {}
        self._names = np.empty(0, dtype=object)  # int id -> str (None when retired)
        self._alive = np.zeros(0, dtype=bool)  # int id -> currently searchable
        self._in_stock = np.zeros(0, dtype=bool)
        self._cat_code = np.zeros(0, dtype=np.int32)  # int id -> category code, -1 none
        self._cat_vocab: list[str] = []
        self._cat_lookup: dict[str, int] = {}
        self._cat_norm: list[str] = []
        self._n_tombstones = 0
        self._mask_cache: dict[tuple[str | None, bool], tuple[np.ndarray, int]] = {}
        self.version = 0  # bumped by every add / remove / update / set_metadata
        self._gpu: Any = None  # (resources, gpu index, position -> int id)
        self._gpu_broken = False
        self._plain_params: tuple[tuple[Any, ...], Any] | None = None  # (key, unfiltered params)
        if self.kind is not None:
            self._index = self._new_index(self.kind, None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        *,
        kind: str = "auto",
        categories: Sequence[str | None] | None = None,
        in_stock: Sequence[bool] | None = None,
        **options: Any,
    ) -> ItemIndex:
        """Create an index sized for these items and add them."""
        arr = np.asarray(vectors)
        if arr.ndim != 2:
            raise ConfigError(f"vectors must be 2-D (n, dim), got shape {arr.shape}")
        index = cls(int(arr.shape[1]), kind, **options)
        index.add(item_ids, arr, categories=categories, in_stock=in_stock)
        return index

    def train(self, sample: np.ndarray, n_items: int) -> None:
        """Choose the kind for `n_items` items and train it on `sample` (some of their vectors),
        as the first `add` does with all of them: for an index filled in parts afterwards
        (`recs.batch.shards`: a seeded sample of the shards, then `add` shard by shard). A kind
        that needs no training (flat, hnsw, or one already trained) ignores the sample."""
        if self._index is not None:
            return
        arr = self._prepare_vectors([f"sample row {i}" for i in range(len(sample))], sample)
        self.kind = self._resolve_kind(int(n_items))
        self._index = self._new_index(self.kind, arr if self.kind == "ivfpq" else None)

    def _resolve_kind(self, n: int) -> str:
        kind = self.requested_kind
        if kind == "auto":
            kind = "flat" if n < AUTO_FLAT_BELOW else "hnsw" if n < AUTO_HNSW_BELOW else "ivfpq"
        if kind == "ivfpq" and n < IVFPQ_MIN_ITEMS:
            note = (
                f"ivfpq needs at least {IVFPQ_MIN_ITEMS} items to train, got {n}: "
                "using an exact flat index instead"
            )
            self.notes.append(note)
            log.info(note)
            kind = "flat"
        return kind

    def _new_index(self, kind: str, train: np.ndarray | None) -> Any:
        d = self.dim
        if kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        if kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = self.ef_construction
            hnsw.hnsw.efSearch = self.ef_search
            return faiss.IndexIDMap2(hnsw)
        assert kind == "ivfpq" and train is not None
        n = len(train)
        nlist = self.nlist or round(4 * math.sqrt(n))
        nlist = max(1, min(nlist, n // 39))  # >= 39 training points per list
        if self.nlist and nlist != self.nlist:
            self.notes.append(
                f"nlist lowered from {self.nlist} to {nlist} for {n} training vectors"
            )
        self.nlist = nlist
        self.pq_m = self.pq_m or _pick_pq_m(d)
        if self.nprobe is None:
            self.nprobe = min(nlist, max(16, nlist // 32))
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFPQ(
            quantizer, d, nlist, self.pq_m, self.nbits, faiss.METRIC_INNER_PRODUCT
        )
        ivf.pq.cp.min_points_per_centroid = 1  # small catalogs: the refine step repairs PQ error
        ivf.nprobe = self.nprobe
        ivf.train(train)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        if self.refine is not None:
            if self.refine == "flat":
                store = faiss.IndexFlatIP(d)
            else:
                qtype = (
                    faiss.ScalarQuantizer.QT_8bit
                    if self.refine == "sq8"
                    else faiss.ScalarQuantizer.QT_fp16
                )
                store = faiss.IndexScalarQuantizer(d, qtype, faiss.METRIC_INNER_PRODUCT)
                store.train(train)
            self._refine_index = store
            self._refiner = None
        return ivf

    # ------------------------------------------------------------------ sizes and ids
    def __len__(self) -> int:
        return len(self._id_to_int)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._id_to_int

    @property
    def item_ids(self) -> list[str]:
        """Searchable item ids, in insertion order of their current vectors."""
        return [str(s) for s in self._names[np.flatnonzero(self._alive)]]

    @property
    def n_tombstones(self) -> int:
        return self._n_tombstones

    @property
    def is_trained(self) -> bool:
        return self._index is not None

    def __repr__(self) -> str:
        return f"ItemIndex(kind={self.kind or self.requested_kind!r}, dim={self.dim}, items={len(self)})"

    def copy(self) -> ItemIndex:
        """An independent copy (FAISS structures serialised and read back): change it while
        searches keep running on this one, then swap (`recs.retrieval.itemchanges`)."""
        other = copy.copy(self)
        for name in ("_index", "_refine_index"):
            native = getattr(self, name)
            if native is not None:
                setattr(other, name, faiss.deserialize_index(faiss.serialize_index(native)))
        for name in ("_names", "_alive", "_in_stock", "_cat_code"):
            setattr(other, name, getattr(self, name).copy())
        other._id_to_int = dict(self._id_to_int)
        other._cat_vocab, other._cat_norm = list(self._cat_vocab), list(self._cat_norm)
        other._cat_lookup = dict(self._cat_lookup)
        other.notes = list(self.notes)
        other._mask_cache = {}
        other._gpu = None
        other._refiner = None
        return other

    # ------------------------------------------------------------------ mutation
    def _prepare_vectors(self, item_ids: list[str], vectors: Any) -> np.ndarray:
        arr = np.array(vectors, dtype=np.float32, copy=True)
        if arr.ndim == 1 and len(item_ids) == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ConfigError(f"vectors must have shape (n, {self.dim}), got {arr.shape}")
        if arr.shape[0] != len(item_ids):
            raise ConfigError(f"{len(item_ids)} item ids but {arr.shape[0]} vectors")
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            bad = [item_ids[i] for i in np.flatnonzero(~finite)]
            raise ConfigError(
                f"NaN or inf in the vector of item {bad[0]!r}"
                + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
            )
        norms = np.linalg.norm(arr, axis=1)
        zero = norms < 1e-12
        if zero.any():
            raise ConfigError(f"zero vector for item {item_ids[int(np.flatnonzero(zero)[0])]!r}")
        arr /= norms[:, None]
        return arr

    def _check_meta(
        self, n: int, categories: Any, in_stock: Any
    ) -> tuple[list | None, np.ndarray | None]:
        cats = None
        if categories is not None:
            cats = list(categories)
            if len(cats) != n:
                raise ConfigError(f"{n} items but {len(cats)} categories")
            for c in cats:
                if c is not None and not isinstance(c, str):
                    raise ConfigError(f"categories must be strings or None, got {c!r}")
        stock = None
        if in_stock is not None:
            stock = np.asarray(in_stock)
            if stock.shape != (n,):
                raise ConfigError(f"{n} items but in_stock has shape {stock.shape}")
            if stock.dtype != bool:
                if not all(isinstance(s, bool | np.bool_) for s in stock.tolist()):
                    raise ConfigError("in_stock values must be booleans")
                stock = stock.astype(bool)
        return cats, stock

    def _cat_codes(self, cats: list[str | None]) -> np.ndarray:
        codes = np.empty(len(cats), dtype=np.int32)
        for i, c in enumerate(cats):
            if c is None or not _norm_category(c):
                codes[i] = -1
                continue
            code = self._cat_lookup.get(c)
            if code is None:
                code = len(self._cat_vocab)
                self._cat_lookup[c] = code
                self._cat_vocab.append(c)
                self._cat_norm.append(_norm_category(c))
            codes[i] = code
        return codes

    def _changed(self) -> None:
        self.version += 1  # callers' caches of `allow_mask` results key on it
        self._mask_cache.clear()
        self._gpu = None

    def add(
        self,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        categories: Sequence[str | None] | None = None,
        in_stock: Sequence[bool] | None = None,
    ) -> None:
        """Add new items. `in_stock` defaults to True, `categories` to none."""
        ids = _as_str_ids(item_ids)
        if not ids:
            return
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(f"item id {dup!r} appears twice in one add()")
        present = [i for i in ids if i in self._id_to_int]
        if present:
            raise ConfigError(f"item {present[0]!r} is already in the index; use update()")
        vecs = self._prepare_vectors(ids, vectors)
        cats, stock = self._check_meta(len(ids), categories, in_stock)
        if self._index is None:
            self.kind = self._resolve_kind(len(ids))
            self._index = self._new_index(self.kind, vecs if self.kind == "ivfpq" else None)

        start = len(self._names)
        int_ids = np.arange(start, start + len(ids), dtype=np.int64)
        if self._refine_index is not None and self._refine_index.ntotal != start:
            raise RuntimeError(
                f"ivfpq refine store holds {self._refine_index.ntotal} rows for {start} int ids"
            )
        self._index.add_with_ids(vecs, int_ids)
        if self._refine_index is not None:
            self._refine_index.add(vecs)  # row = int id
        self._names = np.concatenate([self._names, np.array(ids, dtype=object)])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), dtype=bool)])
        self._in_stock = np.concatenate(
            [self._in_stock, stock if stock is not None else np.ones(len(ids), dtype=bool)]
        )
        codes = self._cat_codes(cats) if cats is not None else np.full(len(ids), -1, np.int32)
        self._cat_code = np.concatenate([self._cat_code, codes])
        for s, i in zip(ids, int_ids.tolist(), strict=True):
            self._id_to_int[s] = i
        self._changed()

    def _int_ids_of(self, item_ids: Sequence[str]) -> np.ndarray:
        ids = _as_str_ids(item_ids)
        missing = [i for i in ids if i not in self._id_to_int]
        if missing:
            raise UnknownItemError(
                f"item {missing[0]!r} is not in the index"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        return np.fromiter((self._id_to_int[i] for i in ids), dtype=np.int64, count=len(ids))

    def remove(self, item_ids: Sequence[str]) -> None:
        """Remove items; they are never returned again (UnknownItemError if absent)."""
        ids = list(dict.fromkeys(_as_str_ids(item_ids)))
        if not ids:
            return
        int_ids = self._int_ids_of(ids)
        self._drop(int_ids)
        for s in ids:
            del self._id_to_int[s]
        self._changed()
        self._maybe_compact()

    def _drop(self, int_ids: np.ndarray) -> None:
        if self.kind == "hnsw":
            self._n_tombstones += len(int_ids)  # FAISS HNSW cannot remove_ids
        else:
            # An ndarray (not an IDSelectorBatch): faiss then picks IDSelectorArray for
            # an IVF with a hashtable direct map, the only selector that one accepts.
            removed = self._index.remove_ids(np.ascontiguousarray(int_ids, dtype=np.int64))
            if removed != len(int_ids):
                raise RuntimeError(f"faiss removed {removed} of {len(int_ids)} vectors")
        # The refine store keeps the rows (row = int id); the IVF no longer returns them.
        self._alive[int_ids] = False
        self._names[int_ids] = None

    def update(
        self,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        categories: Sequence[str | None] | None = None,
        in_stock: Sequence[bool] | None = None,
    ) -> None:
        """Replace the vectors of existing items (remove + add, fresh int ids).

        Metadata not given is kept from the old entry.
        """
        ids = _as_str_ids(item_ids)
        if len(set(ids)) != len(ids):
            raise ConfigError("duplicate item ids in update()")
        old = self._int_ids_of(ids)
        self._prepare_vectors(ids, vectors)  # validate before touching anything
        self._check_meta(len(ids), categories, in_stock)
        if categories is None:
            categories = [self._cat_vocab[c] if c >= 0 else None for c in self._cat_code[old]]
        if in_stock is None:
            in_stock = self._in_stock[old].copy()
        self._drop(old)
        for s in ids:
            del self._id_to_int[s]
        self.add(ids, vectors, categories=categories, in_stock=in_stock)
        self._maybe_compact()

    def set_metadata(
        self,
        item_ids: Sequence[str],
        *,
        categories: Sequence[str | None] | None = None,
        in_stock: Sequence[bool] | None = None,
    ) -> None:
        """Change category / stock of existing items without touching their vectors."""
        int_ids = self._int_ids_of(item_ids)
        cats, stock = self._check_meta(len(int_ids), categories, in_stock)
        if cats is not None:
            self._cat_code[int_ids] = self._cat_codes(cats)
        if stock is not None:
            self._in_stock[int_ids] = stock
        self._changed()

    @property
    def dead_rows(self) -> int:
        """Stored rows no search returns: HNSW tombstones, or the ivfpq refine store's rows of
        removed and updated items."""
        if self._refine_index is not None:
            return int(self._refine_index.ntotal) - len(self)
        return self._n_tombstones

    def _maybe_compact(self) -> None:
        if (
            self.compact_threshold is not None
            and self._index is not None
            and self.dead_rows > self.compact_threshold * max(1, len(self))
        ):
            self.compact()

    def compact(self) -> None:
        """Drop dead rows (see `dead_rows`): rebuild an HNSW graph without its tombstones, or
        an ivfpq index and its refine store with the live items renumbered 0..n-1 (the IVF
        lists re-encoded from the store's vectors). No-op for flat."""
        if self.dead_rows == 0:
            return
        if self._refine_index is not None:
            self._compact_refined()
            return
        if self.kind != "hnsw":
            return
        alive = np.flatnonzero(self._alive).astype(np.int64)
        vecs = self._reconstruct(alive) if len(alive) else np.zeros((0, self.dim), np.float32)
        index = self._new_index("hnsw", None)
        if len(alive):
            index.add_with_ids(vecs, alive)
        self._index = index
        self._n_tombstones = 0
        self._changed()

    def _compact_refined(self) -> None:
        alive = np.flatnonzero(self._alive).astype(np.int64)
        new_store = _store_with_codes(self._refine_index, _store_codes(self._refine_index)[alive])
        self._index.reset()  # keeps the trained quantizer and PQ
        if len(alive):
            vecs = np.asarray(new_store.reconstruct_n(0, len(alive)), dtype=np.float32)
            self._index.add_with_ids(vecs, np.arange(len(alive), dtype=np.int64))
        self._refine_index, self._refiner = new_store, None
        names = self._names[alive]
        self._names = names
        self._alive = np.ones(len(alive), dtype=bool)
        self._in_stock = self._in_stock[alive]
        self._cat_code = self._cat_code[alive]
        self._id_to_int = {str(s): i for i, s in enumerate(names.tolist())}
        self._changed()

    # ------------------------------------------------------------------ vectors
    def _reconstruct(self, int_ids: np.ndarray) -> np.ndarray:
        source = self._refine_index if self._refine_index is not None else self._index
        if len(int_ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(
            source.reconstruct_batch(np.ascontiguousarray(int_ids, dtype=np.int64)),
            dtype=np.float32,
        ).reshape(len(int_ids), self.dim)

    def vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        """Stored (normalised) vectors; approximate for ivfpq (its sq8/fp16/PQ copy)."""
        return self._reconstruct(self._int_ids_of(item_ids))

    def categories(self, item_ids: Sequence[str]) -> list[str | None]:
        codes = self._cat_code[self._int_ids_of(item_ids)]
        return [self._cat_vocab[c] if c >= 0 else None for c in codes]

    def in_stock(self, item_ids: Sequence[str]) -> np.ndarray:
        return self._in_stock[self._int_ids_of(item_ids)].copy()

    def allow_mask(self, item_ids: Sequence[str], allowed: np.ndarray) -> np.ndarray:
        """`search(restrict=...)`'s mask: the items of `item_ids` where `allowed` is true (ids not
        in the index are ignored)."""
        mask = np.zeros(len(self._alive), dtype=bool)
        ids = [self._id_to_int.get(i, -1) for i, ok in zip(item_ids, allowed, strict=True) if ok]
        ints = np.asarray(ids, dtype=np.int64)
        mask[ints[ints >= 0]] = True
        return mask

    # ------------------------------------------------------------------ search
    def _base_mask(self, category: str | None, in_stock_only: bool) -> tuple[np.ndarray, int]:
        """Bool mask over int ids allowed by the shared filters, and its count (cached)."""
        key = (_norm_category(category) if category is not None else None, in_stock_only)
        hit = self._mask_cache.get(key)
        if hit is not None:
            return hit
        mask = self._alive.copy()
        if in_stock_only:
            mask &= self._in_stock
        if key[0] is not None:
            want = key[0]
            codes = [c for c, norm in enumerate(self._cat_norm) if category_rule.is_under(norm, want)]
            mask &= np.isin(self._cat_code, np.asarray(codes, dtype=np.int32))
        result = (mask, int(mask.sum()))
        self._mask_cache[key] = result
        return result

    def _prepare_queries(self, query_vectors: Any) -> np.ndarray:
        # Every step here is paid per call: single-query QPS sees it (scale benchmark's overhead).
        q = np.asarray(query_vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ConfigError(
                f"query vectors must have shape (n, {self.dim}) or ({self.dim},), "
                f"got {np.shape(query_vectors)}"
            )
        if len(q) == 1:  # the serving case: one FAISS norm (a numpy call before the search slows
            q = np.ascontiguousarray(q)  # the search itself by a few us, measured)
            norm2 = float(faiss.fvec_norm_L2sqr(faiss.swig_ptr(q), self.dim))
            if math.isfinite(norm2) and abs(norm2 - 1.0) <= 1e-5:
                return q
        # One pass for both checks: a NaN or inf entry makes the squared norm non-finite; huge
        # finite entries may too, hence the exact re-check.
        sq = np.einsum("ij,ij->i", q, q)
        if not np.isfinite(sq).all():
            finite = np.isfinite(q).all(axis=1)
            if not finite.all():
                raise ConfigError(f"NaN or inf in query vector {int(np.flatnonzero(~finite)[0])}")
            sq = np.square(np.linalg.norm(q.astype(np.float64), axis=1))
        if (np.abs(sq - 1.0) > 1e-5).any():  # towers' vectors are unit already: no copy then
            norms = np.sqrt(sq)
            if (norms < 1e-12).any():
                raise ConfigError(f"zero query vector at row {int(np.flatnonzero(norms < 1e-12)[0])}")
            q = q / norms[:, None].astype(np.float32)  # a new array: the caller's is left alone
        return np.ascontiguousarray(q)

    def _exclusions(self, exclude: Any, n_queries: int) -> list[np.ndarray]:
        """Per query, the int ids to exclude (unknown ids are ignored)."""
        empty = np.zeros(0, dtype=np.int64)
        if exclude is None:
            return [empty] * n_queries
        if isinstance(exclude, str):
            exclude = [exclude]
        items = list(exclude)
        if not items:
            return [empty] * n_queries

        def to_ints(ids: Iterable[Any]) -> np.ndarray:
            ids = _as_str_ids(ids, "excluded item id")
            found = [self._id_to_int[i] for i in ids if i in self._id_to_int]
            return np.unique(np.asarray(found, dtype=np.int64))

        if all(isinstance(x, str) for x in items):
            shared = to_ints(items)
            return [shared] * n_queries
        if any(isinstance(x, str) for x in items):
            raise ConfigError("exclude must be a list of item ids or a list of lists, not a mix")
        if len(items) != n_queries:
            raise ConfigError(f"exclude has {len(items)} lists for {n_queries} queries")
        return [to_ints(x if x is not None else []) for x in items]

    def search(
        self,
        query_vectors: np.ndarray,
        k: int,
        *,
        category: str | None = None,
        in_stock_only: bool = False,
        exclude: Sequence[Sequence[str]] | Sequence[str] | None = None,
        restrict: np.ndarray | None = None,
    ) -> tuple[list[list[str]], list[np.ndarray]]:
        """Top-k items per query: (ids, scores), scores float32 descending, no padding.

        `restrict` (from `allow_mask`) keeps only the items a caller's own filter allows.

        `category` keeps items whose category path equals it or starts with it
        ("Outdoors" matches "Outdoors > Camping > Tents"; case-insensitive).
        `exclude` is one list shared by all queries or one list per query.
        """
        if not isinstance(k, int | np.integer) or k <= 0:
            raise ConfigError(f"k must be a positive int, got {k!r}")
        if category is not None and not _norm_category(category):
            raise ConfigError(f"empty category filter {category!r}; pass None for no filter")
        q = self._prepare_queries(query_vectors)
        n = len(q)
        if self._index is None or len(self) == 0:
            return [[] for _ in range(n)], [np.zeros(0, np.float32) for _ in range(n)]
        if (
            exclude is None
            and category is None
            and not in_stock_only
            and restrict is None
            and self._n_tombstones == 0
        ):  # the common request: one plain FAISS search, nothing to filter
            scores, labels = self._search_plain(q, min(int(k), len(self)))
            return self._results(labels, scores)
        excl = self._exclusions(exclude, n)
        filtered = category is not None or in_stock_only or self._n_tombstones > 0
        base_mask, allowed = (
            self._base_mask(category, in_stock_only) if filtered else (self._alive, len(self))
        )
        if restrict is not None:
            base_mask = base_mask & restrict[: len(base_mask)]
            allowed, filtered = int(base_mask.sum()), True
        if allowed == 0:
            return [[] for _ in range(n)], [np.zeros(0, np.float32) for _ in range(n)]
        any_excl = any(len(e) for e in excl)

        if (filtered or any_excl) and allowed <= self.exact_search_below:
            labels, scores = self._search_exact(q, int(k), base_mask, excl)
        else:
            labels, scores = self._search_faiss(
                q, int(k), base_mask if filtered else None, allowed, excl
            )
        return self._results(labels, scores)

    def _results(
        self, labels: np.ndarray | list[np.ndarray], scores: np.ndarray | list[np.ndarray]
    ) -> tuple[list[list[str]], list[np.ndarray]]:
        """(ids, scores) per query from rows of int ids sorted by descending score, FAISS's
        padding (-1, at the end of a row) dropped."""
        if isinstance(labels, np.ndarray) and labels.size:  # FAISS's rows (float32 scores)
            if len(labels) == 1 and labels[0, -1] >= 0:  # the serving case, a few us cheaper
                return [self._names[labels[0]].tolist()], [scores[0]]
            if labels[:, -1].min() >= 0:
                return self._names[labels].tolist(), list(scores)
        out_ids, out_scores = [], []
        for lab, sc in zip(labels, scores, strict=True):
            keep = (lab >= 0) & np.isfinite(sc)
            out_ids.append(self._names[lab[keep]].tolist())  # the names are str already
            out_scores.append(sc[keep].astype(np.float32))
        return out_ids, out_scores

    def _search_exact(
        self, q: np.ndarray, k: int, mask: np.ndarray, excl: list[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        cand = np.flatnonzero(mask).astype(np.int64)
        vecs = self._reconstruct(cand)
        scores = q @ vecs.T
        labels_out, scores_out = [], []
        for i in range(len(q)):
            s = scores[i]
            if len(excl[i]):
                s = s.copy()
                s[np.isin(cand, excl[i])] = -np.inf
            kk = min(k, len(cand))
            top = np.argpartition(-s, kk - 1)[:kk] if kk < len(cand) else np.arange(len(cand))
            top = top[np.argsort(-s[top], kind="stable")]
            labels_out.append(cand[top])
            scores_out.append(s[top].astype(np.float32))
        return labels_out, scores_out

    def _selector(self, mask: np.ndarray | None, excluded: np.ndarray) -> tuple[Any, list[Any]]:
        """IDSelector for (mask AND NOT excluded); also the objects to keep alive."""
        keep: list[Any] = []
        sel = None
        if mask is not None:
            bits = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(bits)
            keep += [bits, sel]
        if len(excluded):
            batch = faiss.IDSelectorBatch(excluded)
            not_excl = faiss.IDSelectorNot(batch)
            keep += [excluded, batch, not_excl]
            sel = not_excl if sel is None else faiss.IDSelectorAnd(sel, not_excl)
            keep.append(sel)
        return sel, keep

    def _params(self, sel: Any) -> Any:
        if sel is None:  # unfiltered: one cached object (made per call, it cost ~10 us a search)
            key = (self.kind, self.ef_search, self.nprobe, self.refine_factor)
            if self._plain_params is None or self._plain_params[0] != key:
                self._plain_params = (key, self._new_params(None))
            return self._plain_params[1]
        return self._new_params(sel)

    def _new_params(self, sel: Any) -> Any:
        if self.kind == "hnsw":
            return (
                faiss.SearchParametersHNSW(sel=sel, efSearch=self.ef_search)
                if sel is not None
                else faiss.SearchParametersHNSW(efSearch=self.ef_search)
            )
        if self.kind == "ivfpq":
            ivf = (
                faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe)
                if sel is not None
                else faiss.SearchParametersIVF(nprobe=self.nprobe)
            )
            if self._refine_index is None:
                return ivf
            # The parameters object keeps `ivf` (and its selector) alive.
            return faiss.IndexRefineSearchParameters(
                k_factor=float(self.refine_factor), base_index_params=ivf
            )
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def _searched(self) -> Any:
        """The FAISS index a search goes to: for ivfpq with refine, an `IndexRefine` over the
        IVF-PQ and the refine store (whose rows are the IVF's ids)."""
        if self._refine_index is None:
            return self._index
        if (
            self._refiner is None
            or self._refiner[1] is not self._index
            or self._refiner[2] is not self._refine_index
        ):
            # IndexRefine's constructor insists on equal ntotal, which dead store rows break:
            # build it over two empty stand-ins, then point it at the real pair.
            refiner = faiss.IndexRefine(faiss.IndexFlatIP(self.dim), faiss.IndexFlatIP(self.dim))
            refiner.base_index = self._index
            refiner.refine_index = self._refine_index
            refiner.k_factor = float(self.refine_factor)
            self._refiner = (refiner, self._index, self._refine_index)
        refiner = self._refiner[0]
        refiner.ntotal = self._refine_index.ntotal  # the bound its label check uses
        return refiner

    def _search_plain(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) of one FAISS search without a selector."""
        if self.kind == "flat":
            return self._search_flat_maybe_gpu(q, k)
        return self._searched().search(q, k, params=self._params(None))

    def _search_faiss(
        self, q: np.ndarray, k: int, mask: np.ndarray | None, allowed: int, excl: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, allowed))
        if mask is None and not any(len(e) for e in excl):  # no selector: one plain search
            scores, labels = self._search_plain(q, k)
            return labels, scores
        searched = self._searched()
        labels = np.full((len(q), k), -1, dtype=np.int64)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        groups: dict[bytes, list[int]] = {}
        for i, e in enumerate(excl):
            groups.setdefault(e.tobytes(), []).append(i)
        for rows in groups.values():
            sel, _keep = self._selector(mask, excl[rows[0]])
            qs = q[rows]
            if sel is None and self.kind == "flat":
                d, lab = self._search_flat_maybe_gpu(qs, k)
            else:
                d, lab = searched.search(qs, k, params=self._params(sel))
            labels[rows], scores[rows] = lab, d
        return labels, scores

    # ------------------------------------------------------------------ GPU (flat only)
    @property
    def searched_on_gpu(self) -> bool:
        """Whether unfiltered flat searches now run on the GPU copy: False before the first
        search, without a faiss GPU, and after a failure sent them back to the CPU (silently)."""
        return self._gpu is not None and not self._gpu_broken

    def _gpu_wanted(self) -> bool:
        return self.use_gpu is not False and not self._gpu_broken and device.faiss_has_gpu()

    def _search_flat_maybe_gpu(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k <= GPU_MAX_K and self._gpu_wanted():
            try:
                if self._gpu is None:
                    res = faiss.StandardGpuResources()
                    inner = faiss.downcast_index(self._index.index)
                    gpu_index = faiss.index_cpu_to_gpu(res, 0, inner)
                    pos_to_id = faiss.vector_to_array(self._index.id_map).astype(np.int64)
                    self._gpu = (res, gpu_index, pos_to_id)
                _res, gpu_index, pos_to_id = self._gpu
                d, pos = gpu_index.search(q, k)
                lab = np.where(pos >= 0, pos_to_id[np.clip(pos, 0, None)], -1)
                return d, lab
            except Exception as exc:  # a broken GPU path must not break search
                self._gpu_broken = True
                self._gpu = None
                log.warning("faiss GPU search failed (%s); using the CPU from now on", exc)
        return self._index.search(q, k)

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict[str, Any]:
        return {
            "format_version": INDEX_FORMAT_VERSION,
            "kind": self.kind,
            "requested_kind": self.requested_kind,
            "dim": self.dim,
            "metric": "inner_product",
            "normalized": True,
            "params": {
                "hnsw_m": self.hnsw_m,
                "ef_construction": self.ef_construction,
                "ef_search": self.ef_search,
                "nlist": self.nlist,
                "pq_m": self.pq_m,
                "nbits": self.nbits,
                "nprobe": self.nprobe,
                "refine": self.refine,
                "refine_factor": self.refine_factor,
                "exact_search_below": self.exact_search_below,
                "compact_threshold": self.compact_threshold,
            },
            "n_items": len(self),
            "n_tombstones": self._n_tombstones,
            "has_refine": self._refine_index is not None,
            "notes": list(self.notes),
            "faiss_version": getattr(faiss, "__version__", "unknown"),
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write index.faiss, ids.json, index_config.json (+ refine.faiss) into `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        alive = np.flatnonzero(self._alive)
        ids = {
            "format_version": INDEX_FORMAT_VERSION,
            "next_id": len(self._names),
            "item_ids": [str(s) for s in self._names[alive]],
            "int_ids": alive.tolist(),
            "category_vocab": list(self._cat_vocab),
            "category_codes": self._cat_code[alive].tolist(),
            "in_stock": self._in_stock[alive].tolist(),
        }
        if self._index is not None:
            faiss.write_index(self._index, str(out / INDEX_FILE))
        if self._refine_index is not None:
            faiss.write_index(self._refine_index, str(out / REFINE_FILE))
        (out / IDS_FILE).write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
        (out / CONFIG_FILE).write_text(
            json.dumps(self._config(), indent=2) + "\n", encoding="utf-8"
        )
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, use_gpu: bool | None = None) -> ItemIndex:
        from recs.artifacts import read_artifact_file

        src = Path(directory)
        for name in (CONFIG_FILE, IDS_FILE):
            if not (src / name).is_file():
                raise ArtifactError(f"{src} is not a saved ItemIndex: missing {src / name}")
        config, ids = (
            read_artifact_file(src / name, "JSON", lambda p: json.loads(p.read_text(encoding="utf-8")))
            for name in (CONFIG_FILE, IDS_FILE)
        )
        if not isinstance(config, dict) or not isinstance(ids, dict):
            raise ArtifactError(f"{src}: {CONFIG_FILE} and {IDS_FILE} must hold JSON objects")
        version = config.get("format_version")
        if not isinstance(version, int) or version > INDEX_FORMAT_VERSION:
            raise ArtifactError(
                f"{src}: index format version {version!r} is newer than this recs "
                f"reads ({INDEX_FORMAT_VERSION}); upgrade recs"
            )
        params = dict(config.get("params", {}))
        known = {
            "hnsw_m",
            "ef_construction",
            "ef_search",
            "nlist",
            "pq_m",
            "nbits",
            "nprobe",
            "refine",
            "refine_factor",
            "exact_search_below",
            "compact_threshold",
        }
        params = {key: v for key, v in params.items() if key in known}
        kind = config.get("kind")
        if kind not in ("flat", "hnsw", "ivfpq", None):
            raise ArtifactError(f"{src}: unknown index kind {kind!r}")
        try:
            index = cls(
                int(config["dim"]), config.get("requested_kind", "auto"), use_gpu=use_gpu, **params
            )
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{src}: invalid index_config.json ({exc})") from exc
        index.notes = list(config.get("notes", []))
        index.kind = kind
        index._index = None
        if kind is not None:
            if not (src / INDEX_FILE).is_file():
                raise ArtifactError(f"{src}: missing {INDEX_FILE}")
            index._index = read_artifact_file(src / INDEX_FILE, "FAISS index", lambda p: faiss.read_index(str(p)))
            if index._index.d != index.dim:
                raise ArtifactError(
                    f"{src}: {INDEX_FILE} has dim {index._index.d}, config says {index.dim}"
                )
            if config.get("has_refine"):
                if not (src / REFINE_FILE).is_file():
                    raise ArtifactError(f"{src}: missing {REFINE_FILE}")
                index._refine_index = read_artifact_file(src / REFINE_FILE, "FAISS index", lambda p: faiss.read_index(str(p)))
        try:
            index._restore_ids(ids)
        except (KeyError, TypeError, ValueError, IndexError, MemoryError) as exc:
            raise ArtifactError(f"{src / IDS_FILE}: invalid item ids ({type(exc).__name__}: {exc})") from exc
        if index._refine_index is not None:
            index._refine_index = index._store_by_int_id(index._refine_index, src / REFINE_FILE)
        ntotal = index._index.ntotal if index._index is not None else 0
        index._n_tombstones = ntotal - len(index._id_to_int)
        if index._n_tombstones < 0 or (kind != "hnsw" and index._n_tombstones):
            raise ArtifactError(f"{src}: {INDEX_FILE} holds {ntotal} vectors for {len(index._id_to_int)} ids")
        return index

    def _store_by_int_id(self, native: Any, path: Path) -> Any:
        """The refine store with row i = int id i. Older saves held an `IndexIDMap2`
        (removed items' rows gone): its codes are laid out by int id (dead rows zero)."""
        rows = len(self._names)  # (faiss.read_index returns the concrete class already)
        if isinstance(native, faiss.IndexIDMap2):
            inner = faiss.downcast_index(native.index)
            ids = faiss.vector_to_array(native.id_map).astype(np.int64)
            if len(ids) and (ids.min() < 0 or ids.max() >= rows):
                raise ArtifactError(f"{path}: ids outside 0..{rows - 1}")
            by_id = np.zeros((rows, int(inner.code_size)), dtype=np.uint8)
            by_id[ids] = _store_codes(inner)
            native = _store_with_codes(inner, by_id)
        if native.ntotal != rows:
            raise ArtifactError(f"{path}: {native.ntotal} rows for {rows} int ids")
        return native

    def _restore_ids(self, ids: dict[str, Any]) -> None:
        """The id maps saved in ids.json (KeyError/TypeError/ValueError when malformed)."""
        index = self
        next_id = int(ids["next_id"])
        int_ids = np.asarray(ids["int_ids"], dtype=np.int64)
        names = list(ids["item_ids"])
        if len(int_ids) != len(names) or (len(int_ids) and (int_ids.max() >= next_id or int_ids.min() < 0)):
            raise ValueError("inconsistent ids")
        index._names = np.full(next_id, None, dtype=object)
        index._names[int_ids] = np.array(names, dtype=object)
        index._alive = np.zeros(next_id, dtype=bool)
        index._alive[int_ids] = True
        index._in_stock = np.zeros(next_id, dtype=bool)
        index._in_stock[int_ids] = np.asarray(ids["in_stock"], dtype=bool)
        index._cat_code = np.full(next_id, -1, dtype=np.int32)
        index._cat_code[int_ids] = np.asarray(ids["category_codes"], dtype=np.int32)
        index._cat_vocab = list(ids["category_vocab"])
        index._cat_lookup = {c: i for i, c in enumerate(index._cat_vocab)}
        index._cat_norm = [_norm_category(c) for c in index._cat_vocab]
        index._id_to_int = dict(zip(names, int_ids.tolist(), strict=True))
