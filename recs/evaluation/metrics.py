"""Full-ranking recommendation metrics.

Two layers, same numbers:
- per-user functions (`recall_at_k`, `ndcg_at_k`, `mrr`, `hit_rate_at_k`) on one ranked list and one
  relevant set; they return None when the relevant set is empty (the metric is undefined there);
- batch functions on a boolean hit matrix (`hits[u, r]`: the item at rank r of user u is relevant),
  vectorised with numpy; users with no relevant item are skipped, never counted as zeros.

Ranked lists are over the whole catalog (no sampled negatives). No function ever returns NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence

import numpy as np

__all__ = [
    "coverage",
    "hit_matrix",
    "hit_rate_at_k",
    "hit_rate_from_hits",
    "intra_list_diversity",
    "mean_ranking_metrics",
    "mrr",
    "mrr_from_hits",
    "ndcg_at_k",
    "ndcg_from_hits",
    "popularity_bias",
    "popularity_percentiles",
    "recall_at_k",
    "recall_from_hits",
]


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


# ---------------------------------------------------------------------------------------------
# Batch layer: hit matrices


def hit_matrix(
    ranked: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hits of the top-k of each ranked list: (bool array (n_users, k), int array (n_users,) of
    relevant-set sizes). Lists shorter than k are padded with misses (padding is never a hit)."""
    k = _check_k(k)
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} ranked lists but {len(relevant)} relevant sets")
    hits = np.zeros((len(ranked), k), dtype=bool)
    n_relevant = np.zeros(len(ranked), dtype=np.int64)
    for u, (items, rel) in enumerate(zip(ranked, relevant, strict=True)):
        rel_set = rel if isinstance(rel, (set, frozenset)) else set(rel)
        n_relevant[u] = len(rel_set)
        if rel_set:
            top = list(items)[:k]
            hits[u, : len(top)] = [item in rel_set for item in top]
    return hits, n_relevant


def _cut(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = _check_k(k)
    hits = np.asarray(hits, dtype=bool)
    if hits.ndim != 2:
        raise ValueError("hits must be a 2-d (users, ranks) array")
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    if n_relevant.shape != (hits.shape[0],):
        raise ValueError("n_relevant must have one entry per row of hits")
    top = np.zeros((hits.shape[0], k), dtype=bool)
    width = min(k, hits.shape[1])
    top[:, :width] = hits[:, :width]
    return top, n_relevant


def recall_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user recall@k = hits@k / min(|relevant|, k), for users with |relevant| > 0 only
    (the returned array has one entry per such user, in order)."""
    top, n_rel = _cut(hits, n_relevant, k)
    keep = n_rel > 0
    # min(|rel|, k): a user with more relevant items than slots can still reach 1.0.
    return top[keep].sum(axis=1) / np.minimum(n_rel[keep], k)


def ndcg_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with binary gains; ideal DCG puts min(|relevant|, k) hits on top."""
    top, n_rel = _cut(hits, n_relevant, k)
    keep = n_rel > 0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (top[keep] * discounts).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(n_rel[keep], k)]
    return dcg / ideal


def mrr_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user reciprocal rank of the first hit within the top k (0 when none)."""
    top, n_rel = _cut(hits, n_relevant, k)
    top = top[n_rel > 0]
    any_hit = top.any(axis=1)
    first = np.argmax(top, axis=1)
    return np.where(any_hit, 1.0 / (first + 1.0), 0.0)


def hit_rate_from_hits(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user 1.0 when at least one relevant item is in the top k, else 0.0."""
    top, n_rel = _cut(hits, n_relevant, k)
    return top[n_rel > 0].any(axis=1).astype(np.float64)


_BATCH = {
    "recall": recall_from_hits,
    "ndcg": ndcg_from_hits,
    "mrr": mrr_from_hits,
    "hit_rate": hit_rate_from_hits,
}


def mean_ranking_metrics(
    hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """Means of recall/ndcg/mrr/hit_rate at each k over users with a non-empty relevant set, plus
    "users" (how many were counted). With no such user every mean is 0.0 and "users" is 0."""
    n_rel = np.asarray(n_relevant, dtype=np.int64)
    users = int((n_rel > 0).sum())
    out: dict[str, float] = {}
    for k in ks:
        for name, fn in _BATCH.items():
            values = fn(hits, n_rel, k)
            out[f"{name}@{int(k)}"] = float(values.mean()) if users else 0.0
    out["users"] = float(users)
    return out


# ---------------------------------------------------------------------------------------------
# Per-user layer


_PerUser = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def _one(
    fn: _PerUser, ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int
) -> float | None:
    hits, n_rel = hit_matrix([ranked], [relevant], k)
    if n_rel[0] == 0:
        return None
    return float(fn(hits, n_rel, k)[0])


def recall_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float | None:
    """hits@k / min(|relevant|, k); None when `relevant` is empty."""
    return _one(recall_from_hits, ranked, relevant, k)


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float | None:
    """Binary-gain NDCG@k; None when `relevant` is empty."""
    return _one(ndcg_from_hits, ranked, relevant, k)


def mrr(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float | None:
    """Reciprocal rank of the first relevant item within the top k (0.0 if none); None when
    `relevant` is empty."""
    return _one(mrr_from_hits, ranked, relevant, k)


def hit_rate_at_k(
    ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int
) -> float | None:
    """1.0 if any relevant item is in the top k, else 0.0; None when `relevant` is empty."""
    return _one(hit_rate_from_hits, ranked, relevant, k)


# ---------------------------------------------------------------------------------------------
# Beyond accuracy


def coverage(ranked: Sequence[Sequence[Hashable]], catalog_size: int, k: int) -> float:
    """Distinct items recommended in the top k of any list / catalog size (0.0 for an empty
    catalog)."""
    k = _check_k(k)
    if catalog_size <= 0:
        return 0.0
    seen: set[Hashable] = set()
    for items in ranked:
        seen.update(list(items)[:k])
    return min(1.0, len(seen) / catalog_size)


def intra_list_diversity(
    ranked: Sequence[Sequence[Hashable]], category: Mapping[Hashable, str | None], k: int
) -> float | None:
    """Mean over lists of the fraction of item pairs (within the top k) whose categories differ.

    Pairs with an item of unknown category are left out, and so are lists with no such pair.
    Returns None when nothing is left (no categories at all)."""
    k = _check_k(k)
    values: list[float] = []
    for items in ranked:
        cats = [category.get(i) for i in list(items)[:k]]
        cats = [c for c in cats if c]
        n = len(cats)
        if n < 2:
            continue
        # Same-category pairs from the counts: sum c*(c-1)/2, no O(k^2) loop.
        _, counts = np.unique(np.asarray(cats, dtype=str), return_counts=True)
        pairs = n * (n - 1) / 2
        same = float((counts * (counts - 1) / 2).sum())
        values.append(1.0 - same / pairs)
    if not values:
        return None
    return float(np.mean(values))


def popularity_percentiles(counts: np.ndarray) -> np.ndarray:
    """Mid-rank percentile in [0, 1] of each item's count among all items' counts:
    (#items with a smaller count + half the items with an equal count) / #items.

    Mid-ranks make a uniformly random recommender score 0.5 on average, whatever the ties."""
    counts = np.nan_to_num(np.asarray(counts, dtype=np.float64), nan=0.0)
    n = counts.size
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    sorted_counts = np.sort(counts)
    below = np.searchsorted(sorted_counts, counts, side="left")
    at_or_below = np.searchsorted(sorted_counts, counts, side="right")
    return (below + 0.5 * (at_or_below - below)) / n


def popularity_bias(
    ranked: Sequence[Sequence[Hashable]], percentile: Mapping[Hashable, float], k: int
) -> float:
    """Mean popularity percentile (see `popularity_percentiles`) of the recommended items in the
    top k of every list; items without a percentile count as 0 (never seen in training).
    0.0 when nothing was recommended."""
    k = _check_k(k)
    values = [percentile.get(i, 0.0) for items in ranked for i in list(items)[:k]]
    if not values:
        return 0.0
    return float(np.mean(values))
