"""Collaborative factors: implicit ALS over the shop's events, a candidate source and a ranking
feature ("people who bought like you bought this").

On real shops ALS finds the new-to-user items a user will buy better than text alone; the ranker
learns when to trust it. Fitted where events are (training, `serving_view`), saved as plain arrays
so that serving needs only numpy. Users absent from the fitted events have no factors (score 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from recs.data.schema import EVENT_WEIGHT

# Where each array lives in an artifact (component "interactions").
FILES: dict[str, str] = {"user_ids": "factor_users.npy", "user_factors": "user_factors.npy", "item_factors": "item_factors.npy"}


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
        """File name -> array, as saved in an artifact."""
        return {FILES["user_ids"]: self.user_ids.astype(str), FILES["user_factors"]: self.user_factors,
                FILES["item_factors"]: self.item_factors}

    @classmethod
    def from_files(cls, read: Callable[[str], np.ndarray]) -> UserItemFactors:
        """The factors back from `read(file name)` (e.g. `Artifact.read_npy`)."""
        return cls(**{field: read(name) for field, name in FILES.items()})


def fit_factors(
    events: pl.DataFrame, row_of: dict[str, int], n_items: int, factors: int = 64, iterations: int = 15,
    regularization: float = 0.1, seed: int = 0,
) -> UserItemFactors:
    """ALS (Hu, Koren & Volinsky) on event-weighted counts with log confidence: the `als`
    baseline's defaults, which are tuned for shops in general."""
    import scipy.sparse as sp

    from recs.retrieval.als import fit_als

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
    user_factors, item_factors = fit_als(matrix, factors, regularization, iterations, 1.0, "log", 2, seed)
    return UserItemFactors(user_ids, np.nan_to_num(user_factors), np.nan_to_num(item_factors))
