"""Ranking features: every candidate source's features plus the user's relation to the item.

Computed from what the retriever already holds (no model call), so they cost microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recs.data import category as cat
from recs.retrieval.candidates import FEATURES as CANDIDATE_FEATURES
from recs.retrieval.candidates import NEVER_DAYS, CandidateSet
from recs.retrieval.retriever import Retriever, UserContext

USER_FEATURES: tuple[str, ...] = (
    "price_z",
    "leaf_affinity",
    "top_affinity",
    "times_interacted",
    "days_since_interacted",
    "carted_before",
    "user_log_baskets",
    "user_rebuy_share",
    "new_to_user",
    "history_max_cosine",
    "history_mean_cosine",
)
_COSINE_HISTORY = 20  # most recent distinct bought items the text similarity features compare with
RANKING_FEATURES: tuple[str, ...] = CANDIDATE_FEATURES + USER_FEATURES
_EVENT_WEIGHT = {"view": 0.1, "click": 0.2, "cart": 0.5, "purchase": 1.0}


@dataclass
class UserSignals:
    leaf: dict[str, float]
    top: dict[str, float]
    price_median: float
    price_spread: float
    log_baskets: float
    rebuy_share: float
    touched: dict[int, tuple[float, float, bool]]  # row -> (count, last time, carted)




def user_signals(retriever: Retriever, context: UserContext) -> UserSignals:
    leaf: dict[str, float] = {}
    top: dict[str, float] = {}
    touched: dict[int, tuple[float, float, bool]] = {}
    for row, event, when in context.interactions:
        weight = _EVENT_WEIGHT.get(event, 0.1)
        category = retriever.categories[row]
        if category:
            leaf[category] = leaf.get(category, 0.0) + weight
            top[cat.top(category)] = top.get(cat.top(category), 0.0) + weight
        count, _, carted = touched.get(row, (0.0, 0.0, False))
        touched[row] = (count + 1.0, when, carted or event in ("cart", "purchase"))
    for table in (leaf, top):
        total = sum(table.values()) or 1.0
        for key in table:
            table[key] /= total
    prices = retriever.items["price"].to_numpy() if "price" in retriever.items.columns else None
    bought = context.history.rows
    if prices is not None and len(bought):
        paid = prices[bought]
        paid = paid[np.isfinite(paid)]
    else:
        paid = np.zeros(0)
    median = float(np.median(paid)) if len(paid) else 0.0
    spread = float(np.subtract(*np.percentile(paid, [75, 25]))) if len(paid) else 0.0
    distinct_times = np.unique(context.history.times) if len(bought) else np.zeros(0)
    rebuys = len(bought) - len(np.unique(bought)) if len(bought) else 0
    return UserSignals(
        leaf=leaf,
        top=top,
        price_median=median,
        price_spread=spread,
        log_baskets=float(np.log1p(len(distinct_times))),
        rebuy_share=float(rebuys / len(bought)) if len(bought) else 0.0,
        touched=touched,
    )


def history_cosines(retriever: Retriever, context: UserContext, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max, mean) item-tower cosine of each candidate to the user's most recent distinct bought
    items: the text towers' view of "like what they buy" (zeros without a purchase history)."""
    recent = list(dict.fromkeys(context.history.rows[::-1].tolist()))[:_COSINE_HISTORY]
    if not recent or len(rows) == 0:
        return np.zeros(len(rows), np.float32), np.zeros(len(rows), np.float32)
    vectors = retriever.item_vectors
    sims = vectors[rows] @ vectors[np.asarray(recent)].T
    return sims.max(axis=1).astype(np.float32), sims.mean(axis=1).astype(np.float32)


def feature_matrix(retriever: Retriever, context: UserContext, cands: CandidateSet) -> np.ndarray:
    """(n candidates, len(RANKING_FEATURES)) float32, finite."""
    signals = user_signals(retriever, context)
    n = len(cands)
    out = np.zeros((n, len(RANKING_FEATURES)), dtype=np.float32)
    for j, name in enumerate(CANDIDATE_FEATURES):
        out[:, j] = cands.features[name]
    prices = retriever.items["price"].to_numpy() if "price" in retriever.items.columns else None
    base = len(CANDIDATE_FEATURES)
    for i, row in enumerate(cands.item_rows.tolist()):
        category = retriever.categories[row]
        price = float(prices[row]) if prices is not None and np.isfinite(prices[row]) else None
        if price is not None and signals.price_median > 0:
            out[i, base + 0] = (price - signals.price_median) / (signals.price_spread + 0.1 * signals.price_median + 1e-6)
        out[i, base + 1] = signals.leaf.get(category, 0.0) if category else 0.0
        out[i, base + 2] = signals.top.get(cat.top(category), 0.0) if category else 0.0
        count, last, carted = signals.touched.get(row, (0.0, None, False))
        out[i, base + 3] = count
        out[i, base + 4] = NEVER_DAYS if last is None else max(0.0, (retriever.now - last) / 86400.0)
        out[i, base + 5] = 1.0 if carted else 0.0
        out[i, base + 6] = signals.log_baskets
        out[i, base + 7] = signals.rebuy_share
        out[i, base + 8] = 1.0 if cands.features["times_bought"][i] == 0 else 0.0
    out[:, base + 9], out[:, base + 10] = history_cosines(retriever, context, cands.item_rows)
    return np.nan_to_num(np.clip(out, -1e6, 1e6), nan=0.0)
