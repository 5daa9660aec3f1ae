"""Candidates from every source, each carrying the features of every source that found it.

Sources: the two-tower's nearest items, the user's own purchase history (buy-again), co-purchase
neighbours of that history, collaborative factors (ALS: items bought by users who buy alike), and
popularity. Until a learned ranker orders them, they are merged by
weighted reciprocal-rank fusion (RRF): score = sum over sources of weight_s / (RRF_K + rank_s),
rank_s being the candidate's 1-based rank within source s (sources that did not find it add 0).
RRF needs no score calibration across sources, which is why it is the documented default.

With `history_first` (the default) the items the user bought come before everything else, in habit
order (times bought, then recency), and RRF orders the rest. On real shops the user's own history is
the strongest single source (the `repeat` baseline), so the merged list's top-N holds every item
`repeat` would put there plus the other sources' best finds in the remaining places.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from recs.configmodel import StrictModel
from recs.retrieval.rowscores import RowScores, as_row_scores, blend, lookup
from recs.retrieval.tifu import TifuConfig

SOURCES: tuple[str, ...] = ("two_tower", "history", "cooc", "als", "knn", "popularity")
FEATURES: tuple[str, ...] = (
    "two_tower_score",
    "two_tower_rank",
    "times_bought",
    "days_since_bought",
    "rebuy_interval_days",
    "rebuy_due",
    "baskets_since_bought",
    "recent_buys",
    "basket_share",
    "item_rebuy_rate",
    "cooc_score",
    "als_score",
    "tifu_own",
    "tifu_neighbours",
    "tifu_score",
    "popularity",
    "from_two_tower",
    "from_history",
    "from_cooc",
    "from_als",
    "from_knn",
    "from_popularity",
)
_HISTORY_BONUS = 100.0
COOC_HISTORY_ITEMS = 50  # the user's most recent distinct purchases whose co-purchases count
NEVER_DAYS = 3650.0  # "days since bought" for an item never bought: far, finite (no NaN downstream)
NEVER_BASKETS = 1000.0  # "baskets since bought" for an item never bought
RECENT_HALF_LIFE = 5.0  # baskets: a purchase this many of the user's baskets back counts half


class CandidateConfig(StrictModel):
    n_two_tower: int = 200
    n_history: int = 100
    n_cooc: int = 100
    # Collaborative factors (ALS): their best items the user has not bought join the pool and every
    # candidate gets its ALS score; 0 factors turns the source off.
    n_als: int = Field(default=100, ge=0)
    als_factors: int = Field(default=64, ge=0)
    als_regularization: float = Field(default=1.0, ge=0)
    als_alpha: float = Field(default=1.0, gt=0)
    als_weighting: Literal["linear", "log", "bm25"] = "log"
    als_iterations: int = Field(default=15, ge=1)
    # When the towers train with a held-out basket (`Retriever.fit`), the ALS settings above are
    # replaced by the best of `ALS_SEARCH` on it (new-to-user NDCG@10): shops differ too much for
    # one fixed regularization.
    tune_als: bool = True
    # TIFU-KNN (tifu.py): the user's decayed purchase frequencies and their nearest users'; their
    # best items join the pool ("knn") and every candidate gets the three scores. 0 turns it off.
    n_knn: int = Field(default=100, ge=0)
    tifu: TifuConfig = TifuConfig()
    n_popularity: int = 20
    # `trending_purchases`' half-life: the per-item "what sells now" statistic the bundle item
    # model reads (recs/bundling/item_model.py), next to all-time popularity.
    trend_half_life_days: float = Field(default=14.0, gt=0, allow_inf_nan=False)
    rrf_k: float = 10.0
    history_first: bool = True
    # The towers learn baskets' new-to-user items (TrainConfig.positives): their source searches
    # only items the user has not bought, leaving re-buys to the history source.
    two_tower_new_only: bool = True
    weights: dict[str, float] = Field(
        # ALS feeds the ranker; it is not in the fused order (weight 0) unless set here.
        default_factory=lambda: {"two_tower": 1.0, "history": 1.0, "cooc": 0.6, "als": 0.0, "knn": 0.6, "popularity": 0.2}
    )


@dataclass
class UserHistory:
    """A user's purchases: catalog rows and times (epoch seconds), chronological."""

    rows: np.ndarray
    times: np.ndarray

    @classmethod
    def empty(cls) -> UserHistory:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))

    def recent_distinct(self, k: int) -> list[int]:
        """The `k` most recently bought distinct rows, most recent first."""
        return list(dict.fromkeys(self.rows[::-1].tolist()))[:k]


@dataclass
class CandidateSet:
    item_rows: np.ndarray  # (n,) catalog rows
    features: dict[str, np.ndarray]  # name -> (n,) float32, finite
    merged_score: np.ndarray  # (n,) float32, RRF
    cooc_source: np.ndarray  # (n,) history row that pulled the item in most, -1 if none

    def __len__(self) -> int:
        return len(self.item_rows)

    def order(self) -> np.ndarray:
        return np.lexsort((self.item_rows, -self.merged_score))


@dataclass
class ItemHabit:
    """One bought item in a user's history: the buy-again signals (next-basket literature)."""

    times: float  # distinct purchase instants (baskets) that held it
    days_since: float
    interval_days: float  # mean days between its purchases, 0 if bought once
    baskets_since: float  # the user's baskets after its last purchase (0: in the last basket)
    recent_buys: float  # its purchases weighted 0.5 ** (baskets back / RECENT_HALF_LIFE)
    basket_share: float  # share of the user's baskets that held it


def history_features(history: UserHistory, now: float) -> dict[int, ItemHabit]:
    """item row -> its buy-again signals, in one pass over the history (sorted by item, then time)."""
    if len(history.rows) == 0:
        return {}
    # Lines of one basket share a time: baskets are distinct purchase instants, newest = age 0.
    instants = np.unique(history.times)
    order = np.lexsort((history.times, history.rows))
    rows, times = history.rows[order], history.times[order]
    distinct = np.ones(len(rows), dtype=bool)  # one entry per (item, instant)
    distinct[1:] = (rows[1:] != rows[:-1]) | (times[1:] != times[:-1])
    rows, times = rows[distinct], times[distinct]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    ends = np.r_[starts[1:], len(rows)] - 1
    counts = ends - starts + 1
    ages = len(instants) - 1 - np.searchsorted(instants, times)
    recent = np.add.reduceat(np.power(0.5, ages / RECENT_HALF_LIFE), starts)
    first, last = times[starts], times[ends]
    # The mean gap between consecutive purchases telescopes to (last - first) / (n - 1).
    interval = np.where(counts > 1, (last - first) / np.maximum(counts - 1, 1) / 86400.0, 0.0)
    days_since = np.maximum(0.0, (now - last) / 86400.0)
    return {
        int(r): ItemHabit(times=float(c), days_since=float(d), interval_days=float(i), baskets_since=float(a),
                          recent_buys=float(b), basket_share=float(c / len(instants)))
        for r, c, d, i, a, b in zip(rows[starts], counts, days_since, interval, ages[ends], recent, strict=True)
    }


def generate_candidates(
    two_tower_rows: np.ndarray,
    two_tower_scores_all: np.ndarray | RowScores,
    history: UserHistory,
    now: float,
    neighbour_rows: np.ndarray,
    neighbour_scores: np.ndarray,
    popularity: np.ndarray,
    popular_rows: np.ndarray,
    config: CandidateConfig,
    allowed: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None,
    rebuy_rate: np.ndarray | None = None,
    als_scores_all: np.ndarray | RowScores | None = None,
    tifu_all: tuple[np.ndarray | RowScores, np.ndarray | RowScores] | None = None,
) -> CandidateSet:
    """`two_tower_rows`: the index's top items for the user (best first); `two_tower_scores_all`:
    the user's two-tower score of any catalog row (so every candidate gets its two-tower feature);
    `allowed`: optional boolean mask over the catalog (filters), or a function giving it for
    given rows, applied to every source; `rebuy_rate`: per catalog row, the share of its buyers
    who bought it again (0 when omitted); `als_scores_all`: the user's ALS scores (None: no
    factors for this user); `tifu_all`: (own, neighbours) TIFU-KNN scores (None: not fitted).
    Scores are full arrays or `RowScores`, read only on the candidates (rowscores.py): the cost
    of a request follows the candidates, not the catalog."""
    from recs.retrieval.copurchase import neighbour_scores as cooc_of

    two_tower = as_row_scores(two_tower_scores_all)
    als = as_row_scores(als_scores_all) if als_scores_all is not None else None
    hist = history_features(history, now)
    ranks: dict[str, dict[int, int]] = {s: {} for s in SOURCES}
    for rank, row in enumerate(two_tower_rows[: config.n_two_tower].tolist(), start=1):
        ranks["two_tower"][row] = rank
    by_habit = sorted(hist, key=lambda r: (-hist[r].times, hist[r].days_since, r))[: config.n_history]
    for rank, row in enumerate(by_habit, start=1):
        ranks["history"][row] = rank
    cooc: dict[int, tuple[float, int]] = {}
    if len(history.rows):
        recent = history.recent_distinct(COOC_HISTORY_ITEMS)
        weights = np.power(0.5, np.arange(len(recent)) / 5.0)
        cooc = cooc_of(np.asarray(recent), weights, neighbour_rows, neighbour_scores)
        by_cooc = sorted(cooc, key=lambda r: (-cooc[r][0], r))[: config.n_cooc]
        for rank, row in enumerate(by_cooc, start=1):
            ranks["cooc"][row] = rank
    if als is not None and config.n_als > 0:
        bought = set(hist)
        best = als.top(config.n_als + len(bought))
        for rank, row in enumerate((r for r in best.tolist() if r not in bought), start=1):
            if rank > config.n_als:
                break
            ranks["als"][row] = rank
    tifu_own = tifu_neighbours = tifu_blend = None
    if tifu_all is not None:
        tifu_own, tifu_neighbours = as_row_scores(tifu_all[0]), as_row_scores(tifu_all[1])
        tifu_blend = blend(config.tifu.alpha, tifu_own, tifu_neighbours)
        for rank, row in enumerate(tifu_blend.top(config.n_knn, positive_only=True).tolist(), start=1):
            ranks["knn"][row] = rank
    for rank, row in enumerate(popular_rows[: config.n_popularity].tolist(), start=1):
        ranks["popularity"][row] = rank

    rows_arr = np.asarray(sorted(set().union(*(set(r) for r in ranks.values()))), dtype=np.int64)
    if allowed is not None:
        rows_arr = rows_arr[allowed(rows_arr) if callable(allowed) else allowed[rows_arr]]
    rows = rows_arr.tolist()
    n = len(rows_arr)
    feats = {name: np.zeros(n, dtype=np.float32) for name in FEATURES}
    merged = np.zeros(n, dtype=np.float32)
    cooc_source = np.full(n, -1, dtype=np.int64)
    # Per-row scores read on the candidates only (vectorised); the per-user ones below in a loop.
    feats["two_tower_score"][:] = two_tower.at(rows_arr)
    feats["item_rebuy_rate"][:] = rebuy_rate[rows_arr] if rebuy_rate is not None else 0.0
    feats["als_score"][:] = als.at(rows_arr) if als is not None else 0.0
    if tifu_own is not None and tifu_neighbours is not None and tifu_blend is not None:
        feats["tifu_own"][:] = tifu_own.at(rows_arr)
        feats["tifu_neighbours"][:] = tifu_neighbours.at(rows_arr)
        feats["tifu_score"][:] = tifu_blend.at(rows_arr)
    feats["popularity"][:] = np.log1p(popularity[rows_arr])
    position = {row: j for j, row in enumerate(rows)}
    feats["days_since_bought"][:] = NEVER_DAYS
    feats["baskets_since_bought"][:] = NEVER_BASKETS
    for row, habit in hist.items():  # the user's bought items among the candidates
        j = position.get(row)
        if j is None:
            continue
        feats["times_bought"][j] = habit.times
        feats["days_since_bought"][j] = habit.days_since
        feats["rebuy_interval_days"][j] = habit.interval_days
        feats["rebuy_due"][j] = min(habit.days_since / habit.interval_days, 10.0) if habit.interval_days > 0 else 0.0
        feats["baskets_since_bought"][j] = habit.baskets_since
        feats["recent_buys"][j] = habit.recent_buys
        feats["basket_share"][j] = habit.basket_share
    for row, (score, source_row) in cooc.items():
        j = position.get(row)
        if j is not None:
            feats["cooc_score"][j] = score
            cooc_source[j] = source_row
    for source in SOURCES:
        rank = lookup(ranks[source], rows_arr, np.int64)
        found = rank > 0
        feats[f"from_{source}"][:] = found
        if source == "two_tower":
            feats["two_tower_rank"][:] = np.where(found, rank, config.n_two_tower + 1)
        # Each term rounded to float32 before it is added, as a scalar add in float32 would be.
        merged += np.where(found, config.weights.get(source, 0.0) / (config.rrf_k + rank), 0.0).astype(np.float32)
    if config.history_first:
        # Steps of 1 per habit rank: far above any RRF sum (< sum of weights / rrf_k), so
        # bought items come first and keep their habit order.
        rank = lookup(ranks["history"], rows_arr, np.int64)
        merged += np.where(rank > 0, _HISTORY_BONUS + config.n_history + 1 - rank, 0.0).astype(np.float32)
    for name in feats:
        feats[name] = np.nan_to_num(feats[name], nan=0.0, posinf=0.0, neginf=0.0)
    return CandidateSet(rows_arr, feats, merged, cooc_source)
