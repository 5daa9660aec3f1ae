"""The `als` baseline: implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008), fitted
by `recs.retrieval.als.fit_als` (the same fit as the engine's collaborative factors)."""

from __future__ import annotations

import os

import numpy as np
import polars as pl

from recs.data.schema import EVENT_WEIGHT
from recs.errors import ConfigError
from recs.evaluation.recommender import Recommender, UnknownUserPolicy
from recs.retrieval.als import Weighting, fit_als


class ALSRecommender(Recommender):
    """`implicit` ALS on the user x item matrix of event-weighted counts (purchases 1, carts,
    clicks and views lower, `event_weights` overrides), turned into confidences by `weighting` and
    `alpha`. CPU unless `use_gpu` (default: when implicit has CUDA). Items never seen in the
    fitted events get no score (filled by popularity after the scored ones)."""

    name = "als"
    param_names = (
        "factors",
        "regularization",
        "iterations",
        "alpha",
        "weighting",
        "event_weights",
        "num_threads",
        "random_state",
        "use_gpu",
    )

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.1,
        iterations: int = 15,
        alpha: float = 1.0,
        weighting: Weighting = "log",
        event_weights: dict[str, float] | None = None,
        num_threads: int = 0,
        random_state: int = 0,
        use_gpu: bool | None = None,
        unknown_user: UnknownUserPolicy = "fallback",
    ) -> None:
        super().__init__(unknown_user=unknown_user)
        if weighting not in ("linear", "log", "bm25"):
            raise ConfigError(f"als: weighting must be linear, log or bm25, got {weighting!r}")
        if (
            int(factors) < 1
            or int(iterations) < 1
            or float(alpha) <= 0
            or float(regularization) < 0
        ):
            raise ConfigError(
                "als: factors and iterations must be >= 1, alpha > 0, regularization >= 0"
            )
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.iterations = int(iterations)
        self.alpha = float(alpha)
        self.weighting: Weighting = weighting
        self.event_weights = dict(EVENT_WEIGHT if event_weights is None else event_weights)
        self.num_threads = int(num_threads)
        self.random_state = int(random_state)
        self.use_gpu = use_gpu

    def _threads(self) -> int:
        # 0 would mean "every core" to implicit; a shared CI box or benchmark host deserves fewer.
        return self.num_threads if self.num_threads > 0 else max(1, min(4, os.cpu_count() or 1))

    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        import implicit.gpu

        weighted = events.with_columns(
            pl.col("event")
            .replace_strict(self.event_weights, default=0.0, return_dtype=pl.Float64)
            .alias("_v")
        ).filter(pl.col("_v") > 0)
        user_items = self._matrix(weighted, "_v")
        use_gpu = (
            bool(implicit.gpu.HAS_CUDA)
            if self.use_gpu is None
            else bool(self.use_gpu and implicit.gpu.HAS_CUDA)
        )
        self._user_factors, self._item_factors = fit_als(
            user_items, self.factors, self.regularization, self.iterations, self.alpha,
            self.weighting, self._threads(), self.random_state, use_gpu,
        )
        self._has_user = np.diff(user_items.indptr) > 0
        self._has_item = np.diff(user_items.tocsc().indptr) > 0

    def _score(self, users: np.ndarray) -> np.ndarray:
        scores = (self._user_factors[users] @ self._item_factors.T).astype(np.float64)
        scores[:, ~self._has_item] = -np.inf
        # A user whose events all weigh 0 has no factors worth the name: popularity instead.
        scores[~self._has_user[users]] = -np.inf
        return scores

    def _get_state(self) -> dict[str, np.ndarray]:
        return {
            "user_factors": self._user_factors,
            "item_factors": self._item_factors,
            "has_user": self._has_user,
            "has_item": self._has_item,
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._user_factors = arrays["user_factors"].astype(np.float32)
        self._item_factors = arrays["item_factors"].astype(np.float32)
        self._has_user = arrays["has_user"].astype(bool)
        self._has_item = arrays["has_item"].astype(bool)
        if self._user_factors.shape[0] != len(self._user_ids) or self._item_factors.shape[0] != len(
            self._item_ids
        ):
            raise ValueError("factor shapes do not match the saved users / items")
