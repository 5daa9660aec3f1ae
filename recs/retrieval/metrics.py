"""Ranking metrics over boolean hit matrices (`hits[u, r]`: the item at rank r of user u is
relevant), vectorised with numpy; users with no relevant item are skipped, never counted as zeros.

The retrieval trainer's validation (Recall@K / NDCG@K every epoch) and the ranking stage's
cross-encoder check use them; `recs.evaluation.metrics` builds the per-user and beyond-accuracy
metrics on top of them (same numbers). `paired_difference` (the paired delta of two methods with its
normal-approximation interval) is here for the same reason: the ranking stage picks its default R
with it; `recs.evaluation.paired` re-exports it. No function ever returns NaN.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence

import numpy as np

__all__ = [
    "Z_95",
    "Z_95_ONE_SIDED",
    "check_k",
    "hit_matrix",
    "hit_rate_from_hits",
    "mean_ranking_metrics",
    "mrr_from_hits",
    "ndcg_from_hits",
    "paired_difference",
    "recall_from_hits",
]


def check_k(k: int) -> int:
    """k as an int; ValueError unless it is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def hit_matrix(
    ranked: Sequence[Sequence[Hashable]], relevant: Sequence[Collection[Hashable]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hits of the top-k of each ranked list: (bool array (n_users, k), int array (n_users,) of
    relevant-set sizes). Lists shorter than k are padded with misses (padding is never a hit)."""
    k = check_k(k)
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
    k = check_k(k)
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


Z_95 = 1.959964
Z_95_ONE_SIDED = 1.644854  # `ci_low` is then a one-sided 95% lower bound (a decision rule's)


def paired_difference(method: Mapping[str, float], reference: Mapping[str, float], z: float = Z_95) -> dict[str, float]:
    """`method` minus `reference`, per user: {"users", "mean_method", "mean_reference", "ratio",
    "delta", "ci_low", "ci_high"} (the interval mean +- z * sd / sqrt(n)). `ratio` is
    mean_method / mean_reference (0 when the reference mean is 0). With no common user every
    value is 0."""
    users = sorted(set(method) & set(reference))
    if not users:
        return {"users": 0.0, "mean_method": 0.0, "mean_reference": 0.0, "ratio": 0.0, "delta": 0.0,
                "ci_low": 0.0, "ci_high": 0.0}
    a = np.array([method[u] for u in users], dtype=np.float64)
    b = np.array([reference[u] for u in users], dtype=np.float64)
    diff = a - b
    half = z * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    mean_b = float(b.mean())
    return {
        "users": float(len(users)),
        "mean_method": float(a.mean()),
        "mean_reference": mean_b,
        "ratio": float(a.mean() / mean_b) if mean_b > 0 else 0.0,
        "delta": float(diff.mean()),
        "ci_low": float(diff.mean() - half),
        "ci_high": float(diff.mean() + half),
    }
