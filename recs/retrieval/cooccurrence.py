"""Item co-occurrence and purchase popularity: the one core behind serving's co-purchase
neighbours (`retrieval.copurchase`), the `cooc` baseline (`evaluation.baselines.cooc`) and the
set scorer's pair features (`bundling.cooc`).

Small plain functions on numpy / scipy arrays, in the order they are used:

    inc = incidence(purchases, "basket_id", row_of, n_items)        # groups x items
    sim = cooccurrence(inc, "cosine", also=[(users, 0.3)], floor=1)  # items x items, no diagonal
    rows, scores = top_neighbours(sim, 50)                           # or prune_rows(sim, 50)
    pop = purchase_popularity(events, row_of, n_items)               # purchases per item

Each caller's weighting is a set of arguments here (see their modules); the numbers they produce
are bit-identical to what each computed on its own before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from recs.data.schema import epoch_seconds

__all__ = [
    "NORMALISATIONS",
    "cooccurrence",
    "cooccurrence_from_grams",
    "cosine",
    "first_purchase_times",
    "gram",
    "incidence",
    "incidence_matrix",
    "item_frequency",
    "prune_rows",
    "purchase_popularity",
    "top_neighbours",
    "trending_purchases",
]

Normalisation = Literal["count", "cosine", "scaled_cosine"]
NORMALISATIONS: tuple[str, ...] = ("count", "cosine", "scaled_cosine")
_TINY = 1e-12  # denominators never reach 0 (only negative weights could get them there)


# -- incidence: groups (baskets, users, sets) x items ------------------------------------------------


def incidence_matrix(
    groups: np.ndarray,
    item_rows: np.ndarray,
    n_items: int,
    weights: np.ndarray | None = None,
    dtype: type = np.float32,
) -> sp.csr_matrix:
    """(n_groups, n_items) CSR from parallel arrays of group codes (any integers) and catalog rows.

    Groups are renumbered 0..n_groups-1 in ascending code order (empty groups have no row).
    Without `weights` the matrix is binary (an item twice in a group is one entry); with `weights`
    the entry is the sum of the weights of its (group, item) pairs. Zero groups -> (0, n_items)."""
    groups = np.asarray(groups).ravel()
    item_rows = np.asarray(item_rows, dtype=np.int64).ravel()
    if groups.shape != item_rows.shape:
        raise ValueError(f"groups and item_rows differ in length ({groups.size} != {item_rows.size})")
    if item_rows.size and (item_rows.min() < 0 or item_rows.max() >= n_items):
        raise ValueError(f"item rows must lie in [0, {n_items})")
    if groups.size == 0:
        return sp.csr_matrix((0, n_items), dtype=dtype)
    codes, rows = np.unique(groups, return_inverse=True)
    if weights is None:
        data = np.ones(item_rows.size, dtype=dtype)
    else:
        data = np.asarray(weights, dtype=dtype).ravel()
        if data.shape != item_rows.shape:
            raise ValueError(f"weights and item_rows differ in length ({data.size} != {item_rows.size})")
    out = sp.csr_matrix((data, (rows.ravel(), item_rows)), shape=(codes.size, n_items), dtype=dtype)
    out.sum_duplicates()
    if weights is None:
        out.data[:] = 1
    return out


def incidence(
    events: pl.DataFrame,
    group_column: str,
    row_of: Mapping[str, int],
    n_items: int,
    weights: str | None = None,
    dtype: type = np.float32,
) -> sp.csr_matrix:
    """(groups, n_items) CSR of `events` grouped by `group_column` (basket_id, user_id, ...).

    Rows with a null group or an item outside `row_of` (item_id -> catalog row) are left out.
    Binary by default; `weights` names a column whose values are summed per (group, item).
    Rows are the distinct groups in ascending order."""
    columns = [group_column, "item_id"] + ([weights] if weights is not None else [])
    frame = _with_rows(events.select(columns).filter(pl.col(group_column).is_not_null()), row_of)
    groups = frame[group_column].rank("dense").to_numpy() if frame.height else np.zeros(0, np.int64)
    return incidence_matrix(
        groups,
        frame["_row"].to_numpy(),
        n_items,
        None if weights is None else frame[weights].to_numpy(),
        dtype,
    )


def item_frequency(incidence: sp.spmatrix) -> np.ndarray:
    """Column sums of an incidence matrix (groups containing each item, when binary), its dtype."""
    return np.asarray(incidence.sum(axis=0), dtype=incidence.dtype).ravel()


# -- co-occurrence: items x items ---------------------------------------------------------------------


def cooccurrence(
    incidence: sp.spmatrix,
    normalise: Normalisation = "count",
    *,
    also: Sequence[tuple[sp.spmatrix, float]] = (),
    floor: float = 0.0,
    shrink: float = 0.0,
) -> sp.csr_matrix:
    """(n_items, n_items) CSR of co-occurrences, the diagonal dropped, sorted indices, the
    incidence's dtype.

    C = X'X + sum(w * Y'Y for Y, w in also): `also` adds weaker co-occurrences (e.g. the same
    user in different baskets) with their weight. d = diag(C) (before it is dropped: the
    weighted number of groups holding the item, for binary incidences). Then

    - "count": C itself;
    - "cosine": C_ij / (sqrt(max(d_i, floor) * max(d_j, floor)) + shrink) (see `cosine`);
    - "scaled_cosine": D C D with D = diag(1 / sqrt(max(d, floor))), i.e. C_ij * a_i * a_j: the
      same cosine without shrinkage as a diagonal scaling, rounded differently (a few ulp in
      float32). Serving's co-purchase neighbours are computed this way and keep their scores and
      tie order bit for bit.
    """
    n_items = incidence.shape[1]
    for other, _ in also:
        if other.shape[1] != n_items:
            raise ValueError(f"incidences differ in items ({other.shape[1]} != {n_items})")
    grams = [(gram(other), weight) for other, weight in also if other.shape[0]]
    return cooccurrence_from_grams(gram(incidence), normalise, also=grams, floor=floor, shrink=shrink)


def gram(incidence: sp.spmatrix) -> sp.csr_matrix:
    """X'X (items x items, the incidence's dtype): a sum over groups, so the grams of disjoint
    sets of groups add up to the whole one's (`recs.batch.statistics` sums them per partition)."""
    return (incidence.T @ incidence).tocsr()


def cooccurrence_from_grams(
    counts: sp.spmatrix,
    normalise: Normalisation = "count",
    *,
    also: Sequence[tuple[sp.spmatrix, float]] = (),
    floor: float = 0.0,
    shrink: float = 0.0,
) -> sp.csr_matrix:
    """`cooccurrence` from the grams of its incidences (`gram`): X'X and (Y'Y, weight) pairs."""
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {', '.join(NORMALISATIONS)}, got {normalise!r}")
    n_items = counts.shape[1]
    dtype = counts.dtype
    counts = sp.csr_matrix(counts)
    for other, weight in also:
        counts = counts + weight * sp.csr_matrix(other)
    counts = sp.csr_matrix(counts, dtype=dtype)
    diag = counts.diagonal()
    counts.setdiag(0)
    counts.eliminate_zeros()
    counts.sort_indices()
    if normalise == "count" or not counts.nnz:
        return counts
    rows = np.repeat(np.arange(n_items), np.diff(counts.indptr))
    cols = counts.indices
    if normalise == "cosine":
        counts.data = cosine(counts.data, diag[rows], diag[cols], floor=floor, shrink=shrink)
    else:
        with np.errstate(divide="ignore"):  # an item without co-occurrences is never looked up
            scale = 1.0 / np.sqrt(np.maximum(diag, floor))
        counts.data = counts.data * scale[rows] * scale[cols]
    return counts


def cosine(
    counts: np.ndarray, freq_i: np.ndarray, freq_j: np.ndarray, floor: float = 0.0, shrink: float = 0.0
) -> np.ndarray:
    """Elementwise counts / (sqrt(max(freq_i, floor) * max(freq_j, floor)) + shrink).

    `floor` keeps rare items from looking similar to everything (1: a pair's cosine never exceeds
    its count); `shrink` pulls pairs seen few times towards 0. The dtype of the inputs."""
    norm = np.sqrt(np.maximum(freq_i, floor) * np.maximum(freq_j, floor)) + shrink
    return counts / np.maximum(norm, _TINY)


# -- keeping the best per row ------------------------------------------------------------------------


def _row_order(matrix: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values, rank within row): the entries ordered by row, value descending,
    column ascending."""
    coo = matrix.tocoo()
    rows, cols, vals = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, rows, side="left")
    return rows, cols, vals, np.arange(rows.size) - starts


def prune_rows(matrix: sp.spmatrix, keep: int) -> sp.csr_matrix:
    """The `keep` largest entries of each row (ties: the lower column), same shape and dtype,
    sorted indices: bounds a model's size and drops the long tail of one-off co-occurrences."""
    rows, cols, vals, rank = _row_order(matrix)
    top = rank < keep
    out = sp.csr_matrix((vals[top], (rows[top], cols[top])), shape=matrix.shape, dtype=matrix.dtype)
    out.sort_indices()
    return out


def top_neighbours(matrix: sp.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `k` largest entries, best first (ties: the lower column), as dense arrays:
    (columns (n_rows, k) int32, -1 where a row has fewer entries; values, the matrix's dtype,
    0 there)."""
    n_rows = matrix.shape[0]
    out_rows = np.full((n_rows, k), -1, dtype=np.int32)
    out_scores = np.zeros((n_rows, k), dtype=matrix.dtype)
    rows, cols, vals, rank = _row_order(matrix)
    top = rank < k
    out_rows[rows[top], rank[top]] = cols[top]
    out_scores[rows[top], rank[top]] = vals[top]
    return out_rows, out_scores


# -- popularity ---------------------------------------------------------------------------------------


def purchase_popularity(events: pl.DataFrame, row_of: Mapping[str, int], n_items: int) -> np.ndarray:
    """Purchase events per catalog row (float64, n_items): every row with event == "purchase"
    (every row when there is no `event` column, the data contract's default); items outside
    `row_of` are not counted."""
    purchases = _purchases(events)
    counts = _with_rows(purchases.group_by("item_id").len(), row_of)
    out = np.zeros(n_items, dtype=np.float64)
    out[counts["_row"].to_numpy()] = counts["len"].to_numpy()
    return out


def trending_purchases(
    events: pl.DataFrame, row_of: Mapping[str, int], n_items: int, now: float, half_life_days: float
) -> np.ndarray:
    """`purchase_popularity` with each purchase weighted 0.5 ** (its age at `now`, epoch seconds,
    / `half_life_days`): what sells now, where popularity also counts last season's sellers.
    Purchases after `now` weigh 1."""
    purchases = _purchases(events)
    rows = _with_rows(purchases.select("item_id", "timestamp"), row_of)
    out = np.zeros(n_items, dtype=np.float64)
    if rows.height:
        age_days = np.maximum(now - epoch_seconds(rows["timestamp"]), 0.0) / 86400.0
        np.add.at(out, rows["_row"].to_numpy(), np.exp2(-age_days / half_life_days))
    return out


def first_purchase_times(events: pl.DataFrame, row_of: Mapping[str, int], n_items: int) -> np.ndarray:
    """Per catalog row, the epoch seconds of its first purchase (float64; inf: never bought):
    a new line sells differently from a long-standing one."""
    purchases = _purchases(events)
    first = _with_rows(purchases.group_by("item_id").agg(pl.col("timestamp").min()), row_of)
    out = np.full(n_items, np.inf, dtype=np.float64)
    if first.height:
        out[first["_row"].to_numpy()] = epoch_seconds(first["timestamp"])
    return out


def _purchases(events: pl.DataFrame) -> pl.DataFrame:
    """The rows with event == "purchase" (every row when there is no `event` column)."""
    return events.filter(pl.col("event") == "purchase") if "event" in events.columns else events


def _with_rows(frame: pl.DataFrame, row_of: Mapping[str, int]) -> pl.DataFrame:
    """`frame` restricted to items in `row_of`, with their catalog row as `_row` (int64)."""
    rows = pl.DataFrame(
        {"item_id": list(row_of), "_row": list(row_of.values())},
        schema={"item_id": pl.Utf8, "_row": pl.Int64},
    )
    return frame.with_columns(pl.col("item_id").cast(pl.Utf8)).join(rows, on="item_id", how="inner")
