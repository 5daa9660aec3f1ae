"""Co-purchase neighbours: items bought in the same basket (and, more weakly, by the same user)."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

USER_LEVEL_WEIGHT = 0.3  # same user, different baskets: a weaker sign of going together than one basket


def _incidence(events: pl.DataFrame, group: str, row_of: dict[str, int], n_items: int) -> sp.csr_matrix:
    pairs = events.filter(pl.col(group).is_not_null()).select(group, "item_id").unique()
    pairs = pairs.filter(pl.col("item_id").is_in(list(row_of)))
    if pairs.height == 0:
        return sp.csr_matrix((0, n_items), dtype=np.float32)
    groups = pairs[group].cast(pl.Categorical).to_physical().to_numpy()
    cols = np.array([row_of[i] for i in pairs["item_id"].to_list()], dtype=np.int64)
    return sp.csr_matrix(
        (np.ones(len(cols), dtype=np.float32), (groups, cols)), shape=(int(groups.max()) + 1, n_items)
    )


def copurchase_neighbours(
    events: pl.DataFrame, row_of: dict[str, int], n_items: int, top_m: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`top_m` neighbours per catalog row by cosine of co-purchase counts.

    Returns (rows (n_items, top_m) int32 with -1 where an item has fewer neighbours, scores float32
    with 0 there). -1 stays internal: callers mask it."""
    purchases = events.filter(pl.col("event") == "purchase")
    baskets = _incidence(purchases, "basket_id", row_of, n_items)
    users = _incidence(purchases, "user_id", row_of, n_items)
    counts = (baskets.T @ baskets).tocsr() if baskets.shape[0] else sp.csr_matrix((n_items, n_items), dtype=np.float32)
    if users.shape[0]:
        counts = counts + USER_LEVEL_WEIGHT * (users.T @ users).tocsr()
    counts = sp.csr_matrix(counts, dtype=np.float32)
    counts.setdiag(0.0)
    counts.eliminate_zeros()
    freq = np.asarray(baskets.sum(axis=0)).ravel() + USER_LEVEL_WEIGHT * np.asarray(users.sum(axis=0)).ravel()
    norm = 1.0 / np.sqrt(np.maximum(freq, 1.0))
    cosine = sp.diags(norm) @ counts @ sp.diags(norm)
    cosine = cosine.tocsr()
    rows = np.full((n_items, top_m), -1, dtype=np.int32)
    scores = np.zeros((n_items, top_m), dtype=np.float32)
    for item in range(n_items):
        start, end = cosine.indptr[item], cosine.indptr[item + 1]
        if start == end:
            continue
        cols, vals = cosine.indices[start:end], cosine.data[start:end]
        keep = np.lexsort((cols, -vals))[:top_m]
        rows[item, : len(keep)] = cols[keep]
        scores[item, : len(keep)] = vals[keep]
    return rows, np.nan_to_num(scores)


def neighbour_scores(
    history_rows: np.ndarray, history_weights: np.ndarray, rows: np.ndarray, scores: np.ndarray
) -> dict[int, tuple[float, int]]:
    """Sum of weighted neighbour scores over a history: item -> (score, the history row that
    contributed most, for explanations)."""
    out: dict[int, tuple[float, int, float]] = {}
    for source, weight in zip(history_rows.tolist(), history_weights.tolist(), strict=True):
        for neighbour, score in zip(rows[source].tolist(), scores[source].tolist(), strict=True):
            if neighbour < 0:
                break
            contribution = weight * score
            total, best_source, best = out.get(neighbour, (0.0, source, -1.0))
            if contribution > best:
                best_source, best = source, contribution
            out[neighbour] = (total + contribution, best_source, best)
    return {item: (total, source) for item, (total, source, _) in out.items()}
