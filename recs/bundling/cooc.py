"""Co-occurrence statistics of training sets: how often two items were in one set, how often each
item was in any (`retrieval.cooccurrence`: raw counts, cosine with frequencies floored at 1).
numpy/scipy only; stored as plain arrays (no pickle).

Pair counts are kept as a symmetric CSR matrix flattened to sorted int64 keys `i * n + j`, so a
batch of pairs is looked up with one `searchsorted` and a row is a contiguous slice.

`own` flags in the lookups implement leave-self-out: a training set's own contribution (one
co-occurrence per pair of its members, one occurrence per member) is subtracted, so the features
of a training set look like those of an unseen set, which is what the scorer meets at test time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recs.retrieval.cooccurrence import cooccurrence, cosine, incidence_matrix, item_frequency
from recs.retrieval.rowscores import SparseScores

N_PAIR_FEATURES = 3  # log1p(count), cosine, count > 0


@dataclass
class CoocStats:
    n_items: int
    keys: np.ndarray  # int64, sorted: i * n_items + j, both (i, j) and (j, i)
    counts: np.ndarray  # float32, same length
    freq: np.ndarray  # float32 (n_items,): sets containing the item
    n_sets: int

    @classmethod
    def empty(cls, n_items: int) -> CoocStats:
        return cls(n_items, np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(n_items, np.float32), 0)

    @classmethod
    def from_sets(cls, sets: Sequence[np.ndarray], n_items: int) -> CoocStats:
        sets = [np.unique(np.asarray(s, dtype=np.int64)) for s in sets]
        sets = [s for s in sets if len(s)]
        if not sets:
            return cls.empty(n_items)
        groups = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
        members = incidence_matrix(groups, np.concatenate(sets), n_items)  # sets x items, binary
        freq = item_frequency(members)
        pairs = cooccurrence(members, "count")
        coo = pairs.tocoo()
        keys = coo.row.astype(np.int64) * n_items + coo.col.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        return cls(n_items, keys[order], coo.data[order].astype(np.float32), freq, len(sets))

    # -- lookups -------------------------------------------------------------------------------

    def pair_counts(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Counts of pairs (i, j) (broadcast), 0 for unseen pairs and for -1 padding."""
        i, j = np.broadcast_arrays(np.asarray(i, np.int64), np.asarray(j, np.int64))
        out = np.zeros(i.shape, np.float32)
        if not len(self.keys):
            return out
        valid = (i >= 0) & (j >= 0)
        q = np.where(valid, i * self.n_items + j, -1)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        found = valid & (self.keys[pos] == q)
        out[found] = self.counts[pos[found]]
        return out

    def item_freq(self, rows: np.ndarray, own: np.ndarray | bool = False) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        f = np.where(rows >= 0, self.freq[np.maximum(rows, 0)], 0.0)
        return np.maximum(f - np.asarray(own, np.float32), 0.0).astype(np.float32)

    def pair_features(
        self, i: np.ndarray, j: np.ndarray, own_i: np.ndarray | bool = False, own_j: np.ndarray | bool = False
    ) -> np.ndarray:
        """(..., 3) features of pairs: log1p(count), count / sqrt(freq_i freq_j), count > 0.
        A pair whose two items are both `own` (members of the training set being featurised)
        has that set's contribution removed."""
        both = np.logical_and(own_i, own_j)
        c = np.maximum(self.pair_counts(i, j) - both.astype(np.float32), 0.0)
        cos = cosine(c, self.item_freq(i, own_i), self.item_freq(j, own_j), floor=1.0)
        return np.stack([np.log1p(c), cos, (c > 0).astype(np.float32)], axis=-1).astype(np.float32)

    def row_features(self, i: int) -> np.ndarray:
        """(n_items, 3) pair features of item i with every item (nothing own): a dense row."""
        out = np.zeros((self.n_items, N_PAIR_FEATURES), np.float32)
        if i < 0 or not len(self.keys):
            return out
        lo, hi = np.searchsorted(self.keys, [i * self.n_items, (i + 1) * self.n_items])
        cols = (self.keys[lo:hi] - i * self.n_items).astype(np.int64)
        c = self.counts[lo:hi]
        out[cols, 0] = np.log1p(c)
        out[cols, 1] = cosine(c, self.freq[i], self.freq[cols], floor=1.0)
        out[cols, 2] = (c > 0).astype(np.float32)
        return out

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(columns, counts) of item i's co-occurring items."""
        lo, hi = np.searchsorted(self.keys, [i * self.n_items, (i + 1) * self.n_items])
        return (self.keys[lo:hi] - i * self.n_items).astype(np.int64), self.counts[lo:hi]

    def summed(self, rows: Sequence[int] | np.ndarray) -> SparseScores:
        """Co-occurrence counts with each item, summed over the distinct `rows` (a user's
        history: what a team's "bought with what you bought" reads), 0 for items never seen with
        them. Costs what those rows' neighbours hold, not the catalog."""
        parts = [self.row(i) for i in dict.fromkeys(int(r) for r in np.asarray(rows, np.int64).ravel() if r >= 0)]
        if not parts:
            return SparseScores(np.zeros(0, np.int64), np.zeros(0, np.float32))
        cols, where = np.unique(np.concatenate([c for c, _ in parts]), return_inverse=True)
        return SparseScores(cols, np.bincount(where, weights=np.concatenate([c for _, c in parts]), minlength=len(cols)))

    def popularity_feature(self, rows: np.ndarray, own: np.ndarray | bool = False) -> np.ndarray:
        """log1p(frequency) scaled to about [0, 1] by the number of sets."""
        scale = float(np.log1p(max(self.n_sets, 1)))
        return (np.log1p(self.item_freq(rows, own)) / scale).astype(np.float32)

    # -- catalog changes -----------------------------------------------------------------------

    def remap(self, new_row_of_old: np.ndarray, n_items: int) -> CoocStats:
        """Stats for a new catalog order: `new_row_of_old[old_row]` is the new row or -1 (gone).
        New items get no co-occurrence (the content path of the scorer still scores them)."""
        mapping = np.asarray(new_row_of_old, np.int64)
        old_i, old_j = np.divmod(self.keys, self.n_items)
        ni, nj = mapping[old_i], mapping[old_j]
        keep = (ni >= 0) & (nj >= 0)
        keys = ni[keep] * n_items + nj[keep]
        order = np.argsort(keys, kind="stable")
        freq = np.zeros(n_items, np.float32)
        known = mapping >= 0
        freq[mapping[known]] = self.freq[known]
        return CoocStats(n_items, keys[order], self.counts[keep][order], freq, self.n_sets)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "keys": self.keys.astype(np.int64),
            "counts": self.counts.astype(np.float32),
            "freq": self.freq.astype(np.float32),
            "n_sets": np.asarray([self.n_sets], np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n_items: int) -> CoocStats:
        return cls(
            n_items,
            np.asarray(arrays["keys"], np.int64),
            np.asarray(arrays["counts"], np.float32),
            np.asarray(arrays["freq"], np.float32),
            int(np.asarray(arrays["n_sets"]).ravel()[0]),
        )
