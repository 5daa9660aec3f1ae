"""Most-bought items for everyone: the floor every model must clear."""

from __future__ import annotations

import numpy as np
import polars as pl

from recs.evaluation.recommender import Recommender


class PopularityRecommender(Recommender):
    """Items ranked by purchase count in the fitted events (distinct baskets per user, summed over
    users), ties by item id. The same ranking the base class uses as its fallback."""

    name = "popularity"

    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        # Nothing beyond the popularity counts the base class already keeps.
        return None

    def _score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self._pop_counts, (len(users), self._pop_counts.size))
