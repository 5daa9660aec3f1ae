"""Item-item co-occurrence ("also bought"): what people buy together with what this user had."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from recs.evaluation.baselines._common import csr_from_state, csr_state, recent_items
from recs.evaluation.recommender import Recommender, UnknownUserPolicy


def prune_rows(m: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Keep the `keep` largest entries of each row (ties by column index): bounds the model size
    and drops the long tail of one-off co-occurrences."""
    coo = m.tocoo()
    frame = (
        pl.DataFrame({"r": coo.row.astype(np.int64), "c": coo.col.astype(np.int64), "v": coo.data})
        .sort(["r", "v", "c"], descending=[False, True, False])
        .filter(pl.int_range(pl.len()).over("r") < keep)
    )
    out = sp.csr_matrix(
        (frame["v"].to_numpy(), (frame["r"].to_numpy(), frame["c"].to_numpy())), shape=m.shape
    )
    out.sort_indices()
    return out


class CoocRecommender(Recommender):
    """Co-occurrence within baskets plus (weighted by `user_weight`) within a user's purchase
    history (their last `max_history` distinct items), cosine-normalised with shrinkage:
    sim(i, j) = C_ij / (sqrt(C_ii C_jj) + shrink), the `neighbours` best kept per item.

    A user's score for j = sum over their history items h (all event kinds, weighted by
    EVENT_WEIGHT and by recency: halved every `half_life` items back) of w(h) * sim(h, j).
    Items with no co-occurrence are filled by popularity.
    """

    name = "cooc"
    param_names = ("user_weight", "shrink", "half_life", "max_history", "neighbours")

    def __init__(
        self,
        user_weight: float = 0.5,
        shrink: float = 10.0,
        half_life: float = 5.0,
        max_history: int = 50,
        neighbours: int = 200,
        unknown_user: UnknownUserPolicy = "fallback",
    ) -> None:
        super().__init__(unknown_user=unknown_user)
        self.user_weight = float(user_weight)
        self.shrink = float(shrink)
        self.half_life = float(half_life)
        self.max_history = int(max_history)
        self.neighbours = int(neighbours)

    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        n_items = len(self._item_ids)
        purchases = events.filter(pl.col("event") == "purchase")
        in_basket = (
            purchases.filter(pl.col("basket_id").is_not_null())
            .select("basket_id", "_i")
            .unique()
            .with_columns(pl.col("basket_id").rank("dense").cast(pl.Int64).sub(1).alias("_b"))
        )
        n_baskets = int(in_basket["_b"].max()) + 1 if in_basket.height else 0
        baskets = sp.csr_matrix(
            (np.ones(in_basket.height), (in_basket["_b"].to_numpy(), in_basket["_i"].to_numpy())),
            shape=(n_baskets, n_items),
        )
        history = recent_items(purchases, self.max_history, self.half_life).with_columns(
            pl.lit(1.0).alias("one")
        )
        owned = self._matrix(history, "one")
        counts = (baskets.T @ baskets + self.user_weight * (owned.T @ owned)).tocsr()
        diag = counts.diagonal()
        counts.setdiag(0.0)
        counts.eliminate_zeros()
        coo = counts.tocoo()
        norm = np.sqrt(diag[coo.row] * diag[coo.col]) + self.shrink
        sim = sp.csr_matrix(
            (coo.data / np.maximum(norm, 1e-12), (coo.row, coo.col)), shape=counts.shape
        )
        self._sim = prune_rows(sim, self.neighbours)

        self._history = self._matrix(
            recent_items(events, self.max_history, self.half_life), "weight"
        )

    def _score(self, users: np.ndarray) -> np.ndarray:
        scores = np.asarray((self._history[users] @ self._sim).todense(), dtype=np.float64)
        scores[scores <= 0] = -np.inf
        return scores

    def _get_state(self) -> dict[str, np.ndarray]:
        return {**csr_state(self._sim, "sim"), **csr_state(self._history, "history")}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        n_items = len(self._item_ids)
        self._sim = csr_from_state(arrays, "sim", (n_items, n_items))
        self._history = csr_from_state(arrays, "history", (len(self._user_ids), n_items))
