"""The `upcf` baseline: UP-CF@r (Faggioli, Polato & Aiolli, "Recency Aware Collaborative Filtering
for Next Basket Recommendation", UMAP 2020): recency-windowed user-wise popularity, spread over
similar users."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from recs.errors import ConfigError
from recs.evaluation.baselines._common import csr_from_state, csr_state, purchase_baskets
from recs.evaluation.recommender import Recommender, UnknownUserPolicy

# Entries of one dense (query users x all users) similarity block: ~32 MB of float64.
_SIM_BLOCK = 1 << 22


class UPCFRecommender(Recommender):
    """UP-CF@r. The user-wise popularity of item i for user v over their last r baskets is
    p_r(v, i) = (baskets among v's last r containing i) / min(r, |B_v|) (`recency` r = 0 or None:
    every basket). Users are compared by the asymmetric cosine of their bought item sets,
    w(u, v) = |I_u & I_v| / (|I_u| ** alpha * |I_v| ** (1 - alpha)), and

        score(u, i) = sum over users v of w(u, v) ** q * p_r(v, i),

    v ranging over every user, u included: w(u, u) = 1, so the user's own recent popularity counts
    with weight 1 beside the (q-sharpened, <= 1) weights of the others. `neighbours` keeps only the
    k most similar other users (None: all). Only purchases count; a basket is a `basket_id`. Items
    scoring 0 are filled by popularity."""

    name = "upcf"
    param_names = ("recency", "alpha", "q", "neighbours")

    def __init__(
        self,
        recency: int | None = 5,
        alpha: float = 0.5,
        q: float = 5.0,
        neighbours: int | None = None,
        unknown_user: UnknownUserPolicy = "fallback",
    ) -> None:
        super().__init__(unknown_user=unknown_user)
        recency = 0 if recency is None else recency
        if isinstance(recency, bool) or not isinstance(recency, (int, np.integer)) or recency < 0:
            raise ConfigError(f"upcf: recency must be an integer >= 0 (0 or None: all baskets), got {recency!r}")
        if not 0.0 <= float(alpha) <= 1.0 or not float(q) > 0:
            raise ConfigError(f"upcf: alpha must be in [0, 1] and q > 0, got alpha={alpha!r}, q={q!r}")
        if neighbours is not None and (
            isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer)) or neighbours < 1
        ):
            raise ConfigError(f"upcf: neighbours must be an integer >= 1 or None, got {neighbours!r}")
        self.recency = int(recency)
        self.alpha = float(alpha)
        self.q = float(q)
        self.neighbours = None if neighbours is None else int(neighbours)

    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        lines = purchase_baskets(events)
        n_baskets = lines.group_by("_u").agg((pl.col("seq").max() + 1).alias("n"))
        window = lines if self.recency == 0 else lines.filter(pl.col("age") < self.recency)
        popularity = (
            window.group_by(["_u", "_i"])
            .agg(pl.len().cast(pl.Float64).alias("c"))
            .join(n_baskets, on="_u")
            .with_columns(
                (pl.col("c") / (pl.col("n") if self.recency == 0 else pl.min_horizontal(pl.col("n"), self.recency)))
                .alias("p")
            )
        )
        self._popularity = self._matrix(popularity, "p")
        self._set_binary()

    def _set_binary(self) -> None:
        # The base class's bought matrix is the binary user x item matrix the similarity needs.
        self._binary = self._bought.astype(np.float64)
        self._sizes = np.diff(self._binary.indptr).astype(np.float64)

    def _score(self, users: np.ndarray) -> np.ndarray:
        n_users = self._binary.shape[0]
        rows_per_block = max(1, _SIM_BLOCK // max(1, n_users))
        scores = np.zeros((users.size, self._binary.shape[1]), dtype=np.float64)
        for start in range(0, users.size, rows_per_block):
            block = users[start : start + rows_per_block]
            weights = self._weights(block)
            scores[start : start + block.size] = (weights @ self._popularity + self._popularity[block]).toarray()
        scores[scores <= 0] = -np.inf
        return scores

    def _weights(self, block: np.ndarray) -> sp.csr_matrix:
        """(len(block) x n_users) sparse w(u, v) ** q of the kept neighbours, self excluded."""
        overlap = (self._binary[block] @ self._binary.T).toarray()
        rows = np.arange(block.size)
        overlap[rows, block] = 0.0  # the user themself counts apart, with weight 1
        hit = overlap > 0
        # Only where users share an item: both sizes are then > 0, so no 0 ** 0 or 0 / 0.
        denom = np.power(self._sizes[block], self.alpha)[:, None] * np.power(self._sizes, 1.0 - self.alpha)[None, :]
        w = np.zeros_like(overlap)
        w[hit] = np.power(overlap[hit] / denom[hit], self.q)
        if self.neighbours is not None and self.neighbours < w.shape[1]:
            k = self.neighbours
            top = np.argpartition(-w, k - 1, axis=1)[:, :k]
            kept = np.zeros_like(w)
            np.put_along_axis(kept, top, np.take_along_axis(w, top, axis=1), axis=1)
            w = kept
        return sp.csr_matrix(w)

    def _get_state(self) -> dict[str, np.ndarray]:
        return csr_state(self._popularity, "popularity")

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._popularity = csr_from_state(
            arrays, "popularity", (len(self._user_ids), len(self._item_ids))
        )
        self._set_binary()
