"""Ranking features: every candidate source's features plus the user's relation to the item.

Computed from what the retriever already holds (no model call), so they cost microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recs.retrieval.candidates import FEATURES as CANDIDATE_FEATURES
from recs.retrieval.candidates import NEVER_DAYS, CandidateSet
from recs.retrieval.retriever import Retriever, UserContext
from recs.retrieval.rowscores import lookup

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
    leaf: dict[int, float]  # leaf category code (`Retriever.category_codes`) -> share of interactions
    top: dict[int, float]  # top category code -> share
    price_median: float
    price_spread: float
    log_baskets: float
    rebuy_share: float
    touched: dict[int, tuple[float, float, bool]]  # row -> (count, last time, carted)


def _shares(codes: np.ndarray, weights: np.ndarray) -> dict[int, float]:
    """code -> its share of the weights (codes < 0 left out), summed in interaction order."""
    keep = codes >= 0
    keys, where = np.unique(codes[keep], return_inverse=True)
    sums = np.bincount(where, weights=weights[keep], minlength=len(keys))
    total = float(sums.sum()) or 1.0
    return {int(k): float(v) / total for k, v in zip(keys.tolist(), sums.tolist(), strict=True)}


def user_signals(retriever: Retriever, context: UserContext) -> UserSignals:
    touched: dict[int, tuple[float, float, bool]] = {}
    weights = np.zeros(len(context.interactions), dtype=np.float64)
    rows = np.zeros(len(context.interactions), dtype=np.int64)
    for j, (row, event, when) in enumerate(context.interactions):
        weights[j] = _EVENT_WEIGHT.get(event, 0.1)
        rows[j] = row
        count, _, carted = touched.get(row, (0.0, 0.0, False))
        touched[row] = (count + 1.0, when, carted or event in ("cart", "purchase"))
    leaf_codes, top_codes = retriever.category_codes
    prices = retriever.masks.prices if "price" in retriever.items.columns else None
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
        leaf=_shares(leaf_codes[rows], weights),
        top=_shares(np.where(leaf_codes[rows] >= 0, top_codes[rows], -1), weights),
        price_median=median,
        price_spread=spread,
        log_baskets=float(np.log1p(len(distinct_times))),
        rebuy_share=float(rebuys / len(bought)) if len(bought) else 0.0,
        touched=touched,
    )


def history_cosines(retriever: Retriever, context: UserContext, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max, mean) item-tower cosine of each candidate to the user's most recent distinct bought
    items: the text towers' view of "like what they buy" (zeros without a purchase history)."""
    recent = context.history.recent_distinct(_COSINE_HISTORY)
    if not recent or len(rows) == 0:
        return np.zeros(len(rows), np.float32), np.zeros(len(rows), np.float32)
    vectors = retriever.item_vectors
    sims = vectors[rows] @ vectors[np.asarray(recent)].T
    return sims.max(axis=1).astype(np.float32), sims.mean(axis=1).astype(np.float32)


def feature_matrix(retriever: Retriever, context: UserContext, cands: CandidateSet) -> np.ndarray:
    """(n candidates, len(RANKING_FEATURES)) float32, finite; vectorised over the candidates."""
    signals = user_signals(retriever, context)
    rows = cands.item_rows
    n = len(cands)
    out = np.zeros((n, len(RANKING_FEATURES)), dtype=np.float32)
    for j, name in enumerate(CANDIDATE_FEATURES):
        out[:, j] = cands.features[name]
    base = len(CANDIDATE_FEATURES)
    if "price" in retriever.items.columns and signals.price_median > 0:
        price = retriever.masks.prices[rows]
        priced = np.isfinite(price)
        scale = signals.price_spread + 0.1 * signals.price_median + 1e-6
        out[priced, base + 0] = (price[priced] - signals.price_median) / scale
    leaf_codes, top_codes = retriever.category_codes
    has_category = leaf_codes[rows] >= 0
    out[:, base + 1] = np.where(has_category, lookup(signals.leaf, leaf_codes[rows]), 0.0)
    out[:, base + 2] = np.where(has_category, lookup(signals.top, top_codes[rows]), 0.0)
    count = np.zeros(n, dtype=np.float64)
    last = np.full(n, np.nan)
    carted = np.zeros(n, dtype=bool)
    for i, row in enumerate(rows.tolist()):  # only the candidates the user touched
        seen = signals.touched.get(row)
        if seen is not None:
            count[i], last[i], carted[i] = seen
    out[:, base + 3] = count
    out[:, base + 4] = np.where(np.isnan(last), NEVER_DAYS, np.maximum(0.0, (retriever.now - last) / 86400.0))
    out[:, base + 5] = carted
    out[:, base + 6] = signals.log_baskets
    out[:, base + 7] = signals.rebuy_share
    out[:, base + 8] = cands.features["times_bought"] == 0
    out[:, base + 9], out[:, base + 10] = history_cosines(retriever, context, rows)
    return np.nan_to_num(np.clip(out, -1e6, 1e6), nan=0.0)
