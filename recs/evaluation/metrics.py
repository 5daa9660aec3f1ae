"""Full-ranking recommendation metrics.

Two layers, same numbers:
- per-user functions (`recall_at_k`, `ndcg_at_k`, `mrr`, `hit_rate_at_k`) on one ranked list and one
  relevant set; they return None when the relevant set is empty (the metric is undefined there);
- batch functions on a boolean hit matrix (`hits[u, r]`: the item at rank r of user u is relevant),
  vectorised with numpy; users with no relevant item are skipped, never counted as zeros. They
  live in `recs.retrieval.metrics` (the trainer's validation uses them; a stage never imports
  evaluation) and are re-exported here.

Ranked lists are over the whole catalog (no sampled negatives). No function ever returns NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence

import numpy as np

from recs.retrieval.metrics import check_k as _check_k
from recs.retrieval.metrics import (
    hit_matrix,
    hit_rate_from_hits,
    mean_ranking_metrics,
    mrr_from_hits,
    ndcg_from_hits,
    recall_from_hits,
)

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
