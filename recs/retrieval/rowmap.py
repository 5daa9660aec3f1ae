"""`RowMap`: how the catalog rows of one catalog follow from another's, when items are added and
removed (`recs.retrieval.itemchanges`). Every per-item array (vectors, statistics, neighbours,
users' histories, the set scorer's co-occurrence) is carried over through the same map, so they
stay aligned: one rule, not one per array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RowMap"]


@dataclass(frozen=True)
class RowMap:
    """`source[new_row]` = the old row it comes from, or -1 for a new item; `n_old` old rows."""

    source: np.ndarray  # int64 (n_new,)
    n_old: int

    @classmethod
    def of(cls, kept_old_rows: np.ndarray, n_old: int, n_added: int) -> RowMap:
        """The old rows kept (in their order), then `n_added` new rows."""
        kept = np.asarray(kept_old_rows, dtype=np.int64)
        return cls(np.concatenate([kept, np.full(n_added, -1, np.int64)]), n_old)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def is_identity(self) -> bool:
        return len(self.source) == self.n_old and bool((self.source == np.arange(self.n_old)).all())

    @property
    def removes(self) -> bool:
        return int((self.source >= 0).sum()) < self.n_old

    @property
    def new_of_old(self) -> np.ndarray:
        """`new_of_old[old_row]` = its new row, -1 for a removed item."""
        out = np.full(self.n_old, -1, np.int64)
        kept = self.source >= 0
        out[self.source[kept]] = np.flatnonzero(kept)
        return out

    def take(self, array: np.ndarray, fill: float | int = 0) -> np.ndarray:
        """`array` (first axis over old rows) over the new rows, `fill` for new items."""
        array = np.asarray(array)
        out = np.full((len(self.source), *array.shape[1:]), fill, dtype=array.dtype)
        kept = self.source >= 0
        out[kept] = array[self.source[kept]]
        return out

    def rows(self, old_rows: np.ndarray) -> np.ndarray:
        """Old row numbers (any shape, -1 = none) as new ones (-1 for removed or none)."""
        old_rows = np.asarray(old_rows, dtype=np.int64)
        mapping = self.new_of_old
        return np.where(old_rows >= 0, mapping[np.clip(old_rows, 0, None)], -1) if self.n_old else np.full(old_rows.shape, -1)
