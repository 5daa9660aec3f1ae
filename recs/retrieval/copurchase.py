"""Co-purchase neighbours: items bought in the same basket (and, more weakly, by the same user)."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from recs.retrieval.cooccurrence import cooccurrence_from_grams, gram, incidence, top_neighbours

USER_LEVEL_WEIGHT = 0.3  # same user, different baskets: a weaker sign of going together than one basket


def copurchase_neighbours(
    events: pl.DataFrame, row_of: dict[str, int], n_items: int, top_m: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`top_m` neighbours per catalog row by cosine of co-purchase counts.

    Counts: distinct (basket, item) purchases co-occurring in a basket, plus USER_LEVEL_WEIGHT
    times distinct (user, item) purchases co-occurring for a user; cosine over those counts
    (item frequencies floored at 1), as a float32 diagonal scaling; ties by the lower row.

    Returns (rows (n_items, top_m) int32 with -1 where an item has fewer neighbours, scores float32
    with 0 there). -1 stays internal: callers mask it."""
    return neighbours_from_grams(*copurchase_grams(events, row_of, n_items), top_m)


def copurchase_grams(events: pl.DataFrame, row_of: dict[str, int], n_items: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The co-purchase counts before weighting: (basket gram, user gram), items x items. Both
    are sums over baskets / users, so those of a log split by user add up to the whole log's."""
    purchases = events.filter(pl.col("event") == "purchase")
    return gram(incidence(purchases, "basket_id", row_of, n_items)), gram(incidence(purchases, "user_id", row_of, n_items))


def neighbours_from_grams(baskets: sp.csr_matrix, users: sp.csr_matrix, top_m: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """`copurchase_neighbours` from `copurchase_grams` (summed over the parts of a log)."""
    similar = cooccurrence_from_grams(baskets, "scaled_cosine", also=[(users, USER_LEVEL_WEIGHT)] if users.nnz else [],
                                      floor=1.0)
    rows, scores = top_neighbours(similar, top_m)
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
