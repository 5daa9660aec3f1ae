"""The `tifu_knn` baseline: TIFU-KNN (Hu, He, Gao & Zhang, "Modeling Personalized Item Frequency
Information for Next-basket Recommendation", SIGIR 2020), built on `recs.retrieval.tifu` (the same
vectors and user-kNN as the engine's TIFU candidate source)."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import ValidationError

from recs.errors import ConfigError
from recs.evaluation.baselines._common import csr_from_state, csr_state, purchase_baskets
from recs.evaluation.recommender import Recommender, UnknownUserPolicy
from recs.retrieval.tifu import TifuConfig, knn_mean, normalise_rows, tifu_vectors

_DEFAULTS = TifuConfig()


class TifuKnnRecommender(Recommender):
    """A user is the vector of their temporally decayed purchase frequencies: baskets grouped
    `group_size` at a time from the most recent back, a basket `p` places back in its group
    weighing `within_decay ** p`, a group `g` places back `group_decay ** g` (see
    `recs.retrieval.tifu`). Score = alpha * own vector + (1 - alpha) * the mean vector of the
    `neighbours` most cosine-similar other users. Only purchases count; a basket is a `basket_id`.
    Items scoring 0 are filled by popularity."""

    name = "tifu_knn"
    param_names = ("group_size", "within_decay", "group_decay", "neighbours", "alpha")

    def __init__(
        self,
        group_size: int = _DEFAULTS.group_size,
        within_decay: float = _DEFAULTS.within_decay,
        group_decay: float = _DEFAULTS.group_decay,
        neighbours: int = _DEFAULTS.neighbours,
        alpha: float = _DEFAULTS.alpha,
        unknown_user: UnknownUserPolicy = "fallback",
    ) -> None:
        super().__init__(unknown_user=unknown_user)
        # TifuConfig owns the valid ranges; its error becomes the usual ConfigError.
        try:
            config = TifuConfig(
                group_size=group_size, within_decay=within_decay, group_decay=group_decay,
                neighbours=neighbours, alpha=alpha,
            )
        except ValidationError as e:
            first = e.errors()[0]
            raise ConfigError(f"tifu_knn: {first['loc'][0]}: {first['msg']}") from None
        self.group_size = config.group_size
        self.within_decay = config.within_decay
        self.group_decay = config.group_decay
        self.neighbours = config.neighbours
        self.alpha = config.alpha

    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        lines = purchase_baskets(events)
        self._set_vectors(
            tifu_vectors(
                lines["_u"].to_numpy(), lines["_i"].to_numpy(), lines["seq"].to_numpy(),
                len(self._user_ids), len(self._item_ids),
                self.group_size, self.within_decay, self.group_decay,
            )
        )

    def _set_vectors(self, vectors: sp.csr_matrix) -> None:
        self._vectors = vectors
        self._unit = normalise_rows(vectors)

    def _score(self, users: np.ndarray) -> np.ndarray:
        own = self._vectors[users]
        scores = self.alpha * own.toarray().astype(np.float64)
        if self.alpha < 1.0:
            # knn_mean works in blocks of query users: never a users x items dense matrix at once.
            neighbours = knn_mean(own, self._vectors, self._unit, self.neighbours, exclude=users)
            scores += (1.0 - self.alpha) * neighbours.astype(np.float64)
        scores[scores <= 0] = -np.inf
        return scores

    def _get_state(self) -> dict[str, np.ndarray]:
        return csr_state(self._vectors, "vectors")

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        vectors = csr_from_state(arrays, "vectors", (len(self._user_ids), len(self._item_ids)))
        # Saved as float64, fitted as float32: back to float32 so a loaded model scores identically.
        self._set_vectors(vectors.astype(np.float32))
