"""Collaborative factors: implicit ALS over the shop's events, a candidate source and a ranking
feature ("people who bought like you bought this").

On real shops ALS finds the new-to-user items a user will buy better than text alone; the ranker
learns when to trust it. Fitted where events are (training, `serving_view`), saved as plain arrays
so that serving needs only numpy. Users absent from the fitted events have no factors (score 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recs.data.schema import EVENT_WEIGHT


@dataclass
class UserItemFactors:
    user_ids: np.ndarray  # (n_users,) str
    user_factors: np.ndarray  # (n_users, f) float32
    item_factors: np.ndarray  # (n_items, f) float32, catalog rows

    def __post_init__(self) -> None:
        self._row_of = {u: i for i, u in enumerate(self.user_ids.tolist())}

    def scores(self, user_id: str | None) -> np.ndarray | None:
        """The user's score for every catalog row, or None for a user without factors."""
        row = self._row_of.get(user_id) if user_id is not None else None
        if row is None:
            return None
        return np.nan_to_num(self.item_factors @ self.user_factors[row], nan=0.0).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"factor_users.npy": self.user_ids.astype(str), "user_factors.npy": self.user_factors,
                "item_factors.npy": self.item_factors}


def fit_factors(
    events: pl.DataFrame, row_of: dict[str, int], n_items: int, factors: int = 64, iterations: int = 15,
    regularization: float = 0.1, seed: int = 0,
) -> UserItemFactors:
    """ALS (Hu, Koren & Volinsky) on event-weighted counts with log confidence: the `als`
    baseline's defaults, which are tuned for shops in general."""
    import implicit.als
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    from recs.evaluation.baselines.als import confidence

    weighted = events.filter(pl.col("item_id").is_in(list(row_of))).with_columns(
        pl.col("event").replace_strict(EVENT_WEIGHT, default=0.0, return_dtype=pl.Float64).alias("_v")
    ).filter(pl.col("_v") > 0)
    user_ids = np.array(sorted(set(weighted["user_id"].cast(pl.Utf8).to_list())), dtype=str)
    if len(user_ids) == 0:
        return UserItemFactors(user_ids, np.zeros((0, factors), np.float32), np.zeros((n_items, factors), np.float32))
    user_row = {u: i for i, u in enumerate(user_ids.tolist())}
    rows = np.array([user_row[u] for u in weighted["user_id"].cast(pl.Utf8).to_list()], dtype=np.int64)
    cols = np.array([row_of[i] for i in weighted["item_id"].to_list()], dtype=np.int64)
    matrix = sp.csr_matrix((weighted["_v"].to_numpy(), (rows, cols)), shape=(len(user_ids), n_items))
    matrix.sum_duplicates()
    # BLAS threads inside implicit's threads slow ALS down many times over (implicit warns).
    with threadpool_limits(1, "blas"):
        model = implicit.als.AlternatingLeastSquares(
            factors=factors, regularization=regularization, alpha=1.0, iterations=iterations,
            num_threads=2, random_state=seed, use_gpu=False,
        )
        model.fit(confidence(matrix, "log", 1.0), show_progress=False)
    return UserItemFactors(
        user_ids,
        np.nan_to_num(np.ascontiguousarray(model.user_factors, dtype=np.float32)),
        np.nan_to_num(np.ascontiguousarray(model.item_factors, dtype=np.float32)),
    )
