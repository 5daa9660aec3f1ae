"""The behaviour statistics serving needs, fitted once from a log into plain arrays.

Popularity, the re-buy rate per item, co-purchase neighbours and the ALS factors are computed by
`fit_statistics` (training, `recs build-index`, a serving view over other events) and saved as .npy
files in the artifact's `interactions` component; nothing refits them when an artifact is loaded.
This is the state a service updates as events arrive.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from recs.retrieval.candidates import CandidateConfig
from recs.retrieval.cooccurrence import purchase_popularity
from recs.retrieval.copurchase import copurchase_neighbours
from recs.retrieval.factors import FILES as FACTOR_FILES
from recs.retrieval.factors import UserItemFactors, fit_factors
from recs.retrieval.rowmap import RowMap
from recs.retrieval.tifu import FILES as TIFU_FILES
from recs.retrieval.tifu import TifuConfig, TifuModel

__all__ = ["FILES", "BehaviourStats", "epoch_seconds", "fit_statistics", "item_rebuy_rate"]

# Where each array lives in an artifact (component "interactions"); the factors add FACTOR_FILES.
FILES: dict[str, str] = {
    "popularity": "popularity.npy",
    "rebuy_rate": "rebuy_rate.npy",
    "neighbour_rows": "neighbour_rows.npy",
    "neighbour_scores": "neighbour_scores.npy",
    "meta": "statistics.json",
}


def epoch_seconds(series: pl.Series) -> np.ndarray:
    return series.dt.epoch("us").to_numpy().astype(np.float64) / 1e6


def item_rebuy_rate(purchases: pl.DataFrame, row_of: dict[str, int], n_items: int, shrink: float = 5.0) -> np.ndarray:
    """Per catalog row: buyers who bought it at two or more instants / (buyers + shrink). Staples
    are re-bought, one-offs are not; the shrink keeps items with few buyers near 0."""
    out = np.zeros(n_items, dtype=np.float32)
    if purchases.height == 0:
        return out
    per_user = purchases.group_by("user_id", "item_id").agg(pl.col("timestamp").n_unique().alias("n"))
    rates = per_user.group_by("item_id").agg(((pl.col("n") >= 2).sum() / (pl.len() + shrink)).alias("rate"))
    for item, rate in rates.iter_rows():
        out[row_of[item]] = rate
    return out


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

    def __post_init__(self) -> None:
        n = len(self.popularity)
        self.popular_rows = np.lexsort((np.arange(n), -self.popularity))

    def forget_user(self, user_id: str) -> None:
        """Nothing per user is served for `user_id` any more (ALS factors, TIFU vector and
        neighbourhood). The per-item aggregates keep their counts until `recs refresh` refits them."""
        if self.factors is not None:
            self.factors.forget(user_id)
        if self.tifu is not None:
            self.tifu.forget(user_id)

    def arrays(self) -> dict[str, np.ndarray]:
        """File name -> array, as saved."""
        out = {FILES[name]: getattr(self, name) for name in ("popularity", "rebuy_rate", "neighbour_rows", "neighbour_scores")}
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
        )

    @staticmethod
    def saved_in(has: Callable[[str], bool]) -> bool:
        """Whether an artifact holds the statistics (artifacts before them refit at load)."""
        return all(has(FILES[name]) for name in ("popularity", "rebuy_rate", "meta"))


def fit_statistics(events: pl.DataFrame, row_of: dict[str, int], n_items: int, config: CandidateConfig) -> BehaviourStats:
    """Everything above from `events` (user_id, item_id, timestamp, event, basket_id), restricted
    to catalog items by the caller. `config.als_factors` = 0: no ALS; `config.n_knn` = 0: no TIFU."""
    now = float(epoch_seconds(events["timestamp"]).max()) if events.height else 0.0
    purchases = events.filter(pl.col("event") == "purchase")
    popularity = purchase_popularity(events, row_of, n_items)
    neighbour_rows, neighbour_scores = copurchase_neighbours(events, row_of, n_items)
    factors = None
    if config.als_factors > 0:
        factors = fit_factors(events, row_of, n_items, config.als_factors, config.als_iterations,
                              config.als_regularization, alpha=config.als_alpha, weighting=config.als_weighting)
    tifu = TifuModel.fit(purchases, row_of, n_items, config.tifu) if config.n_knn > 0 else None
    return BehaviourStats(
        now=now, popularity=popularity, rebuy_rate=item_rebuy_rate(purchases, row_of, n_items),
        neighbour_rows=neighbour_rows, neighbour_scores=neighbour_scores, factors=factors, tifu=tifu,
    )
