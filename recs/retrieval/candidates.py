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

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from recs.configmodel import StrictModel
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
    """item row -> its buy-again signals."""
    out: dict[int, ItemHabit] = {}
    if len(history.rows) == 0:
        return out
    # Lines of one basket share a time: baskets are distinct purchase instants, newest = age 0.
    instants = np.unique(history.times)
    for row in np.unique(history.rows):
        distinct = np.unique(history.times[history.rows == row])
        ages = len(instants) - 1 - np.searchsorted(instants, distinct)
        interval = float(np.diff(distinct).mean() / 86400.0) if len(distinct) > 1 else 0.0
        out[int(row)] = ItemHabit(
            times=float(len(distinct)),
            days_since=max(0.0, (now - distinct[-1]) / 86400.0),
            interval_days=interval,
            baskets_since=float(ages.min()),
            recent_buys=float(np.power(0.5, ages / RECENT_HALF_LIFE).sum()),
            basket_share=float(len(distinct) / len(instants)),
        )
    return out


def generate_candidates(
    two_tower_rows: np.ndarray,
    two_tower_scores_all: np.ndarray,
    history: UserHistory,
    now: float,
    neighbour_rows: np.ndarray,
    neighbour_scores: np.ndarray,
    popularity: np.ndarray,
    popular_rows: np.ndarray,
    config: CandidateConfig,
    allowed: np.ndarray | None = None,
    rebuy_rate: np.ndarray | None = None,
    als_scores_all: np.ndarray | None = None,
    tifu_all: tuple[np.ndarray, np.ndarray] | None = None,
) -> CandidateSet:
    """`two_tower_rows`: the index's top items for the user (best first); `two_tower_scores_all`:
    the user's score for every catalog row (so every candidate gets its two-tower feature);
    `allowed`: optional boolean mask over the catalog (filters), applied to every source;
    `rebuy_rate`: per catalog row, the share of its buyers who bought it again (0 when omitted);
    `als_scores_all`: the user's ALS score for every catalog row (None: no factors for this user);
    `tifu_all`: (own, neighbours) TIFU-KNN scores for every catalog row (None: not fitted)."""
    from recs.retrieval.copurchase import neighbour_scores as cooc_of

    hist = history_features(history, now)
    ranks: dict[str, dict[int, int]] = {s: {} for s in SOURCES}
    for rank, row in enumerate(two_tower_rows[: config.n_two_tower].tolist(), start=1):
        ranks["two_tower"][row] = rank
    by_habit = sorted(hist, key=lambda r: (-hist[r].times, hist[r].days_since, r))[: config.n_history]
    for rank, row in enumerate(by_habit, start=1):
        ranks["history"][row] = rank
    cooc: dict[int, tuple[float, int]] = {}
    if len(history.rows):
        recent = list(dict.fromkeys(history.rows[::-1].tolist()))[:50]  # most recent distinct first
        weights = np.power(0.5, np.arange(len(recent)) / 5.0)
        cooc = cooc_of(np.asarray(recent), weights, neighbour_rows, neighbour_scores)
        by_cooc = sorted(cooc, key=lambda r: (-cooc[r][0], r))[: config.n_cooc]
        for rank, row in enumerate(by_cooc, start=1):
            ranks["cooc"][row] = rank
    if als_scores_all is not None and config.n_als > 0:
        bought = set(hist)
        k = min(len(als_scores_all), config.n_als + len(bought))
        # argpartition first: a full sort of a large catalog per request would dominate latency.
        best = np.argpartition(-als_scores_all, k - 1)[:k]
        best = best[np.lexsort((best, -als_scores_all[best]))]
        for rank, row in enumerate((r for r in best.tolist() if r not in bought), start=1):
            if rank > config.n_als:
                break
            ranks["als"][row] = rank
    tifu_blend = None
    if tifu_all is not None:
        alpha = config.tifu.alpha
        tifu_blend = alpha * tifu_all[0] + (1.0 - alpha) * tifu_all[1]
        k = min(len(tifu_blend), config.n_knn)
        if k > 0:
            best = np.argpartition(-tifu_blend, k - 1)[:k]
            best = best[tifu_blend[best] > 0]
            best = best[np.lexsort((best, -tifu_blend[best]))]
            for rank, row in enumerate(best.tolist(), start=1):
                ranks["knn"][row] = rank
    for rank, row in enumerate(popular_rows[: config.n_popularity].tolist(), start=1):
        ranks["popularity"][row] = rank

    rows = sorted(set().union(*(set(r) for r in ranks.values())))
    if allowed is not None:
        rows = [r for r in rows if allowed[r]]
    rows_arr = np.asarray(rows, dtype=np.int64)
    n = len(rows_arr)
    feats = {name: np.zeros(n, dtype=np.float32) for name in FEATURES}
    merged = np.zeros(n, dtype=np.float32)
    cooc_source = np.full(n, -1, dtype=np.int64)
    log_pop = np.log1p(popularity).astype(np.float32)
    for j, row in enumerate(rows):
        habit = hist.get(row)
        times, days, interval = (habit.times, habit.days_since, habit.interval_days) if habit else (0.0, NEVER_DAYS, 0.0)
        feats["two_tower_score"][j] = two_tower_scores_all[row]
        feats["two_tower_rank"][j] = ranks["two_tower"].get(row, config.n_two_tower + 1)
        feats["times_bought"][j] = times
        feats["days_since_bought"][j] = days
        feats["rebuy_interval_days"][j] = interval
        feats["rebuy_due"][j] = min(days / interval, 10.0) if interval > 0 else 0.0
        feats["baskets_since_bought"][j] = habit.baskets_since if habit else NEVER_BASKETS
        feats["recent_buys"][j] = habit.recent_buys if habit else 0.0
        feats["basket_share"][j] = habit.basket_share if habit else 0.0
        feats["item_rebuy_rate"][j] = rebuy_rate[row] if rebuy_rate is not None else 0.0
        feats["cooc_score"][j] = cooc.get(row, (0.0, -1))[0]
        cooc_source[j] = cooc.get(row, (0.0, -1))[1]
        feats["als_score"][j] = als_scores_all[row] if als_scores_all is not None else 0.0
        if tifu_all is not None and tifu_blend is not None:
            feats["tifu_own"][j] = tifu_all[0][row]
            feats["tifu_neighbours"][j] = tifu_all[1][row]
            feats["tifu_score"][j] = tifu_blend[row]
        feats["popularity"][j] = log_pop[row]
        for source in SOURCES:
            rank = ranks[source].get(row)
            feats[f"from_{source}"][j] = 0.0 if rank is None else 1.0
            if rank is not None:
                merged[j] += config.weights.get(source, 0.0) / (config.rrf_k + rank)
        if config.history_first and row in ranks["history"]:
            # Steps of 1 per habit rank: far above any RRF sum (< sum of weights / rrf_k), so
            # bought items come first and keep their habit order.
            merged[j] += _HISTORY_BONUS + config.n_history + 1 - ranks["history"][row]
    for name in feats:
        feats[name] = np.nan_to_num(feats[name], nan=0.0, posinf=0.0, neginf=0.0)
    return CandidateSet(rows_arr, feats, merged, cooc_source)
