"""The behaviour statistics serving needs, fitted once from a log into plain arrays.

Popularity (all-time and trending), the re-buy rate per item, co-purchase neighbours and the ALS
factors are computed by `fit_statistics` (training, `recs build-index`, a serving view over other
events) and saved as .npy files in the artifact's `interactions` component; nothing refits them
when an artifact is loaded.
This is the state a service updates as events arrive.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recs.data.schema import epoch_seconds
from recs.errors import DataError
from recs.retrieval.candidates import NEVER_DAYS, CandidateConfig
from recs.retrieval.cooccurrence import (
    first_purchase_times,
    purchase_popularity,
    trending_purchases,
)
from recs.retrieval.copurchase import copurchase_grams, neighbours_from_grams
from recs.retrieval.factors import FILES as FACTOR_FILES
from recs.retrieval.factors import UserItemFactors, factor_matrix, fit_factor_matrix
from recs.retrieval.rowmap import RowMap
from recs.retrieval.tifu import FILES as TIFU_FILES
from recs.retrieval.tifu import TifuConfig, TifuModel

__all__ = ["FILES", "BehaviourStats", "StatisticsParts", "fit_statistics", "item_rebuy_rate"]

# Where each array lives in an artifact (component "interactions"); the factors add FACTOR_FILES.
FILES: dict[str, str] = {
    "popularity": "popularity.npy",
    "trending": "trending.npy",
    "first_sold": "first_sold.npy",
    "rebuy_rate": "rebuy_rate.npy",
    "neighbour_rows": "neighbour_rows.npy",
    "neighbour_scores": "neighbour_scores.npy",
    "meta": "statistics.json",
}


def item_rebuy_rate(purchases: pl.DataFrame, row_of: dict[str, int], n_items: int, shrink: float = 5.0) -> np.ndarray:
    """Per catalog row: buyers who bought it at two or more instants / (buyers + shrink). Staples
    are re-bought, one-offs are not; the shrink keeps items with few buyers near 0."""
    repeaters, buyers = rebuy_counts(purchases, row_of, n_items)
    return rebuy_rate_from_counts(repeaters, buyers, shrink)


def rebuy_counts(purchases: pl.DataFrame, row_of: dict[str, int], n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Per catalog row (int64): buyers who bought it at two or more instants, and buyers. Sums
    over users: a log split by user adds up to the whole log's."""
    repeaters, buyers = np.zeros(n_items, dtype=np.int64), np.zeros(n_items, dtype=np.int64)
    if purchases.height == 0:
        return repeaters, buyers
    per_user = purchases.group_by("user_id", "item_id").agg(pl.col("timestamp").n_unique().alias("n"))
    counts = per_user.group_by("item_id").agg((pl.col("n") >= 2).sum().alias("repeat"), pl.len().alias("buyers"))
    rows = np.fromiter((row_of[i] for i in counts["item_id"].to_list()), dtype=np.int64, count=counts.height)
    repeaters[rows], buyers[rows] = counts["repeat"].to_numpy(), counts["buyers"].to_numpy()
    return repeaters, buyers


def rebuy_rate_from_counts(repeaters: np.ndarray, buyers: np.ndarray, shrink: float = 5.0) -> np.ndarray:
    """`item_rebuy_rate` from `rebuy_counts` (items nobody bought: 0)."""
    rate = np.where(buyers > 0, repeaters / (buyers + shrink), 0.0)
    return rate.astype(np.float32)


@dataclass
class BehaviourStats:
    """Per catalog row arrays (popularity, re-buy rate, neighbours) + ALS factors + the log's end."""

    now: float  # epoch seconds of the last event: "days since" features count from here
    popularity: np.ndarray  # float64 purchases per row
    rebuy_rate: np.ndarray  # float32
    neighbour_rows: np.ndarray  # (n_items, m) int32, -1 padded
    neighbour_scores: np.ndarray  # (n_items, m) float32
    factors: UserItemFactors | None = None
    tifu: TifuModel | None = None
    # float64 per row: purchases decayed to `now` (`trending_purchases`); artifacts from before
    # it read zeros until `recs refresh` refits the statistics.
    trending: np.ndarray | None = None
    # float64 per row: epoch seconds of its first purchase (`first_purchase_times`; inf: never,
    # and in artifacts from before it).
    first_sold: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.popularity)
        if self.trending is None:
            self.trending = np.zeros(n, np.float64)
        if self.first_sold is None:
            self.first_sold = np.full(n, np.inf)
        self.popular_rows = np.lexsort((np.arange(n), -self.popularity))

    def days_since_first_sold(self, rows: np.ndarray) -> np.ndarray:
        """Per row of `rows`, days from its first purchase to `now`; NEVER_DAYS if never bought."""
        first = np.asarray(self.first_sold)[rows]
        sold = np.isfinite(first)
        return np.where(sold, np.maximum(self.now - np.where(sold, first, 0.0), 0.0) / 86400.0, NEVER_DAYS)

    def forget_user(self, user_id: str) -> None:
        """Nothing per user is served for `user_id` any more (ALS factors, TIFU vector and
        neighbourhood). The per-item aggregates keep their counts until `recs refresh` refits them."""
        if self.factors is not None:
            self.factors.forget(user_id)
        if self.tifu is not None:
            self.tifu.forget(user_id)

    def arrays(self) -> dict[str, np.ndarray]:
        """File name -> array, as saved."""
        names = ("popularity", "trending", "first_sold", "rebuy_rate", "neighbour_rows", "neighbour_scores")
        out = {FILES[name]: getattr(self, name) for name in names}
        if self.factors is not None:
            out.update(self.factors.arrays())
        if self.tifu is not None:
            out.update(self.tifu.arrays())
        return out

    def meta(self) -> dict[str, object]:
        out: dict[str, object] = {"now": self.now}
        if self.tifu is not None:
            out["tifu"] = self.tifu.config.model_dump(mode="json")
        return out

    @classmethod
    def from_files(cls, read: Callable[[str], np.ndarray], read_text: Callable[[str], str], has: Callable[[str], bool]) -> BehaviourStats:
        """Back from an artifact (`read` an .npy, `read_text` a file, `has` a file name)."""
        factors = UserItemFactors.from_files(read, has) if has(FACTOR_FILES["item_factors"]) else None
        meta = json.loads(read_text(FILES["meta"]))
        popularity = read(FILES["popularity"]).astype(np.float64)
        tifu = None
        if "tifu" in meta and has(TIFU_FILES["indptr"]):
            tifu = TifuModel.from_files(read, len(popularity), TifuConfig.model_validate(meta["tifu"]))
        return cls(
            now=float(meta["now"]),
            popularity=popularity,
            rebuy_rate=read(FILES["rebuy_rate"]).astype(np.float32),
            neighbour_rows=read(FILES["neighbour_rows"]),
            neighbour_scores=read(FILES["neighbour_scores"]),
            factors=factors,
            tifu=tifu,
            trending=read(FILES["trending"]).astype(np.float64) if has(FILES["trending"]) else None,
            first_sold=read(FILES["first_sold"]).astype(np.float64) if has(FILES["first_sold"]) else None,
        )

    def rebased(self, rows: RowMap) -> BehaviourStats:
        """The statistics over a changed catalog (`rows`): removed items leave every array and
        every neighbour list, new items have none (0, no neighbours, zero factors) until refit."""
        mapped = rows.take(rows.rows(self.neighbour_rows), fill=-1).astype(self.neighbour_rows.dtype)
        scores = rows.take(self.neighbour_scores)
        # Neighbour lists stop at the first -1: a removed neighbour's gap is closed, order kept.
        order = np.argsort(mapped < 0, axis=1, kind="stable")
        mapped = np.take_along_axis(mapped, order, axis=1)
        scores = np.where(mapped >= 0, np.take_along_axis(scores, order, axis=1), 0.0).astype(self.neighbour_scores.dtype)
        return BehaviourStats(
            now=self.now, popularity=rows.take(self.popularity), rebuy_rate=rows.take(self.rebuy_rate),
            neighbour_rows=mapped, neighbour_scores=scores,
            factors=self.factors.rebased(rows) if self.factors is not None else None,
            tifu=self.tifu.rebased(rows) if self.tifu is not None else None,
            trending=rows.take(self.trending), first_sold=rows.take(self.first_sold, fill=np.inf),
        )

    @staticmethod
    def saved_in(has: Callable[[str], bool]) -> bool:
        """Whether an artifact holds the statistics (artifacts before them refit at load)."""
        return all(has(FILES[name]) for name in ("popularity", "rebuy_rate", "meta"))


def fit_statistics(events: pl.DataFrame, row_of: dict[str, int], n_items: int, config: CandidateConfig) -> BehaviourStats:
    """Everything above from `events` (user_id, item_id, timestamp, event, basket_id), restricted
    to catalog items by the caller. `config.als_factors` = 0: no ALS; `config.n_knn` = 0: no TIFU."""
    return StatisticsParts.count(events, row_of, n_items, config).finish(config)


@dataclass
class StatisticsParts:
    """What `fit_statistics` counts before it finishes: sums over users, so the parts of a log
    split by user (`recs.batch.statistics`, one per partition) `merge` into the whole log's, and
    `finish` then computes what is not a sum (top neighbours, ALS, the re-buy rate) once."""

    now: float  # -inf: no events
    popularity: np.ndarray  # float64 purchases per row
    trending: np.ndarray  # float64 purchases per row decayed to `now` (`trending_purchases`)
    trend_half_life_days: float
    first_sold: np.ndarray  # float64 epoch seconds of each row's first purchase (inf: none)
    repeaters: np.ndarray  # int64 (see `rebuy_counts`)
    buyers: np.ndarray
    basket_gram: sp.csr_matrix  # items x items (see `copurchase_grams`)
    user_gram: sp.csr_matrix
    users: np.ndarray  # str: the users counted (a user in two parts is refused at `merge`)
    tifu: TifuModel | None = None  # its users' TIFU vectors (one row per user)
    als_users: np.ndarray | None = None  # `factor_matrix`: its users' rows
    als_matrix: sp.csr_matrix | None = None

    @classmethod
    def count(cls, events: pl.DataFrame, row_of: dict[str, int], n_items: int, config: CandidateConfig) -> StatisticsParts:
        now = float(epoch_seconds(events["timestamp"]).max()) if events.height else float("-inf")
        purchases = events.filter(pl.col("event") == "purchase")
        repeaters, buyers = rebuy_counts(purchases, row_of, n_items)
        baskets, users = copurchase_grams(events, row_of, n_items)
        als_users, als_matrix = factor_matrix(events, row_of, n_items) if config.als_factors > 0 else (None, None)
        return cls(
            now=now, popularity=purchase_popularity(events, row_of, n_items),
            trending=trending_purchases(events, row_of, n_items, now, config.trend_half_life_days),
            trend_half_life_days=config.trend_half_life_days, first_sold=first_purchase_times(events, row_of, n_items),
            repeaters=repeaters, buyers=buyers,
            basket_gram=baskets, user_gram=users, users=np.unique(events["user_id"].cast(pl.Utf8).to_numpy()).astype(str),
            tifu=TifuModel.fit(purchases, row_of, n_items, config.tifu) if config.n_knn > 0 else None,
            als_users=als_users, als_matrix=als_matrix,
        )

    def merge(self, other: StatisticsParts) -> StatisticsParts:
        """Both parts' counts summed; their per-user rows stacked (ordered at `finish`)."""
        shared = np.intersect1d(self.users, other.users)
        if len(shared):
            raise DataError(f"user {shared[0]!r} is in two event partitions: partition the events by user")
        tifu = None
        if self.tifu is not None and other.tifu is not None:
            tifu = TifuModel(np.concatenate([self.tifu.user_ids, other.tifu.user_ids]),
                             sp.vstack([self.tifu.vectors, other.tifu.vectors], format="csr"), self.tifu.config)
        als_users, als_matrix = None, None
        if self.als_matrix is not None and other.als_matrix is not None:
            als_users = np.concatenate([self.als_users, other.als_users])  # type: ignore[list-item]
            als_matrix = sp.vstack([self.als_matrix, other.als_matrix], format="csr")
        now = max(self.now, other.now)
        return StatisticsParts(
            now=now, popularity=self.popularity + other.popularity,
            trending=self._trending_at(now) + other._trending_at(now), trend_half_life_days=self.trend_half_life_days,
            first_sold=np.minimum(self.first_sold, other.first_sold),
            repeaters=self.repeaters + other.repeaters, buyers=self.buyers + other.buyers,
            basket_gram=self.basket_gram + other.basket_gram, user_gram=self.user_gram + other.user_gram,
            users=np.union1d(self.users, other.users), tifu=tifu, als_users=als_users, als_matrix=als_matrix,
        )

    def _trending_at(self, now: float) -> np.ndarray:
        """`trending` decayed on from this part's `now` to a later one."""
        if self.now == float("-inf"):
            return self.trending
        return self.trending * np.exp2(-(now - self.now) / 86400.0 / self.trend_half_life_days)

    def finish(self, config: CandidateConfig) -> BehaviourStats:
        neighbour_rows, neighbour_scores = neighbours_from_grams(self.basket_gram, self.user_gram)
        factors = None
        if self.als_matrix is not None and self.als_users is not None:
            order = np.argsort(self.als_users, kind="stable")
            factors = fit_factor_matrix(self.als_users[order], self.als_matrix[order], config.als_factors,
                                        config.als_iterations, config.als_regularization, alpha=config.als_alpha,
                                        weighting=config.als_weighting)
        tifu = None
        if self.tifu is not None:
            order = np.argsort(self.tifu.user_ids, kind="stable")
            tifu = TifuModel(self.tifu.user_ids[order], sp.csr_matrix(self.tifu.vectors[order]), self.tifu.config)
        return BehaviourStats(
            now=self.now if self.now > float("-inf") else 0.0, popularity=self.popularity,
            rebuy_rate=rebuy_rate_from_counts(self.repeaters, self.buyers),
            neighbour_rows=neighbour_rows, neighbour_scores=neighbour_scores, factors=factors, tifu=tifu,
            trending=self.trending, first_sold=self.first_sold,
        )
