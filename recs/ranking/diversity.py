"""Re-ordering for variety: maximal marginal relevance and per-category caps (plain numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Greedy MMR: pick argmax of lam * rel - (1 - lam) * max similarity to what is picked.

    `relevance` is min-max scaled to [0, 1] first so lam trades like for like. lam = 1 returns the
    relevance order exactly. Returns indices into `relevance`."""
    n = len(relevance)
    k = min(k, n)
    if n == 0 or k == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-relevance, kind="stable")
    if lam >= 1.0:
        return order[:k]
    spread = float(relevance.max() - relevance.min())
    rel = (relevance - relevance.min()) / spread if spread > 0 else np.zeros(n)
    sims = vectors @ vectors.T
    chosen: list[int] = []
    max_sim = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        score = lam * rel - (1.0 - lam) * penalty
        score[~available] = -np.inf
        # Ties resolved by relevance order, so results are deterministic.
        best = order[np.argmax(score[order])]
        chosen.append(int(best))
        available[best] = False
        max_sim = np.maximum(max_sim, sims[best])
    return np.asarray(chosen, dtype=np.int64)


def cap_per_category(order: Sequence[int], categories: Sequence[str], cap: int) -> list[int]:
    """Keep the order but at most `cap` items per category (items without one are not capped)."""
    counts: dict[str, int] = {}
    out = []
    for index in order:
        category = categories[index]
        if category:
            if counts.get(category, 0) >= cap:
                continue
            counts[category] = counts.get(category, 0) + 1
        out.append(int(index))
    return out
