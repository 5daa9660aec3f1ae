"""`Filters`: what a request may return (category, price range, stock, exclusions), in one place.

The catalog half of a filter (category, price, stock) is a boolean mask over catalog rows, computed
once per catalog and filter (`CatalogMasks`); the per-request half (excluded items, the user's own
purchases) is applied on a copy. The engine, the ONNX engine, the FAISS search and the bundler all
ask `CatalogMasks`; the SQL/OpenSearch exporters follow the same category rule
(`recs.data.category`).
"""

from __future__ import annotations

import difflib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recs.data import category as cat
from recs.errors import ConfigError

__all__ = ["CatalogMasks", "Filters"]


@dataclass(frozen=True)
class Filters:
    """Category (the path or below it, case-insensitive), price range (items without a price are
    kept), in stock only, the user's purchases left out, explicit exclusions."""

    category: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    in_stock_only: bool = False
    exclude_bought: bool = False
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.category is not None and not cat.normalise(self.category):
            raise ConfigError(f"empty category filter {self.category!r}; pass no category for none")
        for name in ("price_min", "price_max"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not math.isfinite(float(value)) or value < 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ConfigError(f"price_min {self.price_min} is above price_max {self.price_max}")
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @property
    def catalog_key(self) -> tuple[str, float | None, float | None, bool]:
        """The part of the filter that depends only on the catalog (cached per catalog)."""
        return cat.normalise(self.category), self.price_min, self.price_max, self.in_stock_only


class CatalogMasks:
    """Boolean masks over catalog rows for `Filters`, the catalog half cached (LRU)."""

    def __init__(
        self,
        categories: Sequence[str | None],
        prices: np.ndarray | None,
        in_stock: np.ndarray | None,
        row_of: dict[str, int],
        cache_size: int = 256,
    ) -> None:
        n = len(categories)
        key_of = {c: cat.normalise(c) for c in set(categories)}  # a few hundred paths, not one per item
        keys = [key_of[c] for c in categories]
        self._vocab = sorted(set(keys) - {""})
        self._categories = categories  # as the catalog spells them, for messages
        code = {key: i for i, key in enumerate(self._vocab)}
        self._codes = np.asarray([code.get(k, -1) for k in keys], dtype=np.int64)
        self.prices = np.full(n, np.nan) if prices is None else np.asarray(prices, dtype=np.float64)
        self.in_stock = np.ones(n, dtype=bool) if in_stock is None else np.asarray(in_stock, dtype=bool)
        self.row_of = row_of
        self._cache: OrderedDict[tuple, np.ndarray | None] = OrderedDict()
        self._cache_lock = threading.Lock()  # requests run on a service's threadpool
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self._codes)

    def catalog_mask(self, filters: Filters) -> np.ndarray | None:
        """Rows the catalog half of `filters` allows (None: all). Read-only: copy before changing."""
        key = filters.catalog_key
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        category, low, high, in_stock_only = key
        mask: np.ndarray | None = None
        if category or low is not None or high is not None or in_stock_only:
            mask = np.ones(len(self), dtype=bool)
            if category:
                under = [i for i, path in enumerate(self._vocab) if cat.is_under(path, category)]
                if not under:
                    raise ConfigError(self._unknown_category(filters.category or ""))
                mask &= np.isin(self._codes, np.asarray(under, dtype=np.int64))
            known = np.isfinite(self.prices)
            if low is not None:
                mask &= ~known | (self.prices >= low)
            if high is not None:
                mask &= ~known | (self.prices <= high)
            if in_stock_only:
                mask &= self.in_stock
            mask.setflags(write=False)
        with self._cache_lock:
            self._cache[key] = mask
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return mask

    def _unknown_category(self, category: str) -> str:
        """The message for a category no catalog item is in (or below), with the closest path."""
        spelling: dict[str, str] = {}  # every path and every level above one, by comparison key
        for path in self._categories:
            parts = cat.segments(path)
            for depth in range(1, len(parts) + 1):
                spelling.setdefault(cat.normalise(cat.SEPARATOR.join(parts[:depth])), cat.SEPARATOR.join(parts[:depth]))
        close = difflib.get_close_matches(cat.normalise(category), sorted(spelling), n=1, cutoff=0.6)
        hint = f"; did you mean '{spelling[close[0]]}'?" if close else ""
        return f"category '{category}' is not in the catalog{hint}"

    def excluded_rows(self, filters: Filters, bought_rows: np.ndarray | None = None) -> np.ndarray:
        """Catalog rows a request leaves out by id: `exclude` (unknown ids ignored) and, with
        `exclude_bought`, the user's purchases."""
        rows = [self.row_of[i] for i in filters.exclude if i in self.row_of]
        if filters.exclude_bought and bought_rows is not None and len(bought_rows):
            rows.extend(np.asarray(bought_rows, dtype=np.int64).tolist())
        return np.unique(np.asarray(rows, dtype=np.int64))

    def allows(self, filters: Filters, bought_rows: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray] | None:
        """`mask` read on given rows only (None: all allowed): a request's candidates are checked
        without a catalog-sized copy."""
        base = self.catalog_mask(filters)
        excluded = self.excluded_rows(filters, bought_rows)
        if base is None and not len(excluded):
            return None

        def allowed(rows: np.ndarray) -> np.ndarray:
            keep = np.ones(len(rows), dtype=bool) if base is None else base[rows]
            return keep & ~np.isin(rows, excluded) if len(excluded) else keep

        return allowed

    def mask(self, filters: Filters, bought_rows: np.ndarray | None = None) -> np.ndarray | None:
        """Rows the whole filter allows for one request (None: all)."""
        base = self.catalog_mask(filters)
        excluded = self.excluded_rows(filters, bought_rows)
        if not len(excluded):
            return base
        mask = np.ones(len(self), dtype=bool) if base is None else base.copy()
        mask[excluded] = False
        return mask
