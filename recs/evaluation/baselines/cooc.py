"""Item-item co-occurrence ("also bought"): what people buy together with what this user had."""

from __future__ import annotations

import numpy as np
import polars as pl

from recs.evaluation.baselines._common import csr_from_state, csr_state, recent_items
from recs.evaluation.recommender import Recommender, UnknownUserPolicy
from recs.retrieval.cooccurrence import cooccurrence, incidence, incidence_matrix, prune_rows

__all__ = ["CoocRecommender", "prune_rows"]


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
        baskets = incidence(purchases, "basket_id", self._item_index, n_items, dtype=np.float64)
        history = recent_items(purchases, self.max_history, self.half_life)
        owned = incidence_matrix(history["_u"].to_numpy(), history["_i"].to_numpy(), n_items, dtype=np.float64)
        sim = cooccurrence(baskets, "cosine", also=[(owned, self.user_weight)], shrink=self.shrink)
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
