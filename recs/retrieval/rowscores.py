"""A user's scores over the catalog, computed only where they are read.

A request needs a source's best rows (`top`) and its score on each candidate (`at`): neither
needs the whole catalog scored. `DenseScores` wraps a full array (tests, offline evaluation);
`VectorScores` is a factor/embedding dot product with a FAISS index for its best rows;
`SparseScores` holds the few rows a sparse model (TIFU) gives a value, 0 elsewhere.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

__all__ = ["DenseScores", "RowScores", "SparseScores", "VectorScores", "as_row_scores", "blend", "lookup"]


class RowScores(Protocol):
    def at(self, rows: np.ndarray) -> np.ndarray:
        """float32 score of each catalog row in `rows`."""
        ...

    def top(self, k: int, positive_only: bool = False) -> np.ndarray:
        """The `k` best rows, best first, ties to the lower row (`positive_only`: score > 0)."""
        ...


def lookup(table: dict[int, float] | dict[int, int], keys: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """table[key] for each of `keys` (0 where absent), without a Python loop over the keys."""
    out = np.zeros(len(keys), dtype=dtype)
    if table and len(keys):
        known = np.fromiter(table, dtype=np.int64, count=len(table))
        values = np.fromiter(table.values(), dtype=dtype, count=len(table))
        order = np.argsort(known)
        known, values = known[order], values[order]
        where = np.minimum(np.searchsorted(known, keys), len(known) - 1)
        hit = known[where] == keys
        out[hit] = values[where[hit]]
    return out


def _best(rows: np.ndarray, scores: np.ndarray, k: int, positive_only: bool) -> np.ndarray:
    """The k best of `rows` (ascending) by score, best first; of rows tied at the k-th score the
    lower ones are kept, so the answer never depends on how a partial sort splits ties."""
    if positive_only:
        keep = scores > 0
        rows, scores = rows[keep], scores[keep]
    k = min(k, len(rows))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < len(rows):
        # argpartition first: a full sort of a large set per request would dominate latency.
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        above, tied = np.flatnonzero(scores > kth), np.flatnonzero(scores == kth)
        part = np.concatenate([above, tied[: k - len(above)]])
    else:
        part = np.arange(len(rows))
    return rows[part[np.lexsort((rows[part], -scores[part]))]].astype(np.int64)


class DenseScores:
    """Every catalog row's score, given."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = np.asarray(scores)

    def at(self, rows: np.ndarray) -> np.ndarray:
        return self.scores[rows].astype(np.float32)

    def top(self, k: int, positive_only: bool = False) -> np.ndarray:
        return _best(np.arange(len(self.scores)), self.scores, k, positive_only)


class VectorScores:
    """`matrix[row] @ vector`; `index` (FAISS, inner product over `matrix`) finds the best rows."""

    def __init__(self, matrix: np.ndarray, vector: np.ndarray, index: Any | None = None) -> None:
        self.matrix = matrix
        self.vector = np.asarray(vector, dtype=np.float32)
        self.index = index

    def at(self, rows: np.ndarray) -> np.ndarray:
        return np.nan_to_num(self.matrix[rows] @ self.vector, nan=0.0).astype(np.float32)

    def top(self, k: int, positive_only: bool = False) -> np.ndarray:
        if self.index is None:
            return DenseScores(self.matrix @ self.vector).top(k, positive_only)
        k = min(k, self.index.ntotal)
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        _, labels = self.index.search(self.vector.reshape(1, -1), k)
        rows = np.sort(labels[0][labels[0] >= 0]).astype(np.int64)
        # Scores recomputed as `at` gives them: one rule for ties and order, whatever the index.
        return _best(rows, self.at(rows), k, positive_only)


class SparseScores:
    """Scores on sorted distinct `rows`, 0 on every other row."""

    def __init__(self, rows: np.ndarray, values: np.ndarray) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float32)

    def at(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(self.rows):
            return np.zeros(len(rows), dtype=np.float32)
        where = np.minimum(np.searchsorted(self.rows, rows), len(self.rows) - 1)
        return np.where(self.rows[where] == rows, self.values[where], 0.0).astype(np.float32)

    def top(self, k: int, positive_only: bool = False) -> np.ndarray:
        return _best(self.rows, self.values, k, positive_only)


def as_row_scores(scores: np.ndarray | RowScores) -> RowScores:
    return DenseScores(scores) if isinstance(scores, np.ndarray) else scores


def blend(alpha: float, a: RowScores, b: RowScores) -> RowScores:
    """alpha * a + (1 - alpha) * b, sparse when both are."""
    if isinstance(a, SparseScores) and isinstance(b, SparseScores):
        rows = np.union1d(a.rows, b.rows)
        return SparseScores(rows, alpha * a.at(rows) + (1.0 - alpha) * b.at(rows))
    if isinstance(a, DenseScores) and isinstance(b, DenseScores):
        return DenseScores(alpha * a.scores + (1.0 - alpha) * b.scores)
    raise TypeError("blend: both dense or both sparse")
