"""Evaluation splits that never let a held-out event into training.

Two protocols:
- `leave_last_out`: per user, the last purchase basket is the test target, the one before it the
  validation target. The model is fitted on everything the user did strictly before the target
  basket (other users' events are kept whole, the usual leave-last-out convention).
- `time_split`: one global cut-off; everything before it trains, each user's first basket after it is
  the test target. Items first seen at or after the cut-off are cold items.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from recs.data.baskets import DEFAULT_SESSION_GAP, basket_table
from recs.errors import DataError


@dataclass(frozen=True)
class Split:
    """`fit_events`: what a model may learn from when predicting `test`.
    `tune_events`: what it may learn from when predicting `valid` (for hyper-parameter search).
    `test` / `valid`: target frames (user_id, item_id, basket_id, time), one row per distinct item
    of the held-out basket. `cold_items`: catalog items absent from `fit_events`.
    """

    fit_events: pl.DataFrame
    tune_events: pl.DataFrame
    test: pl.DataFrame
    valid: pl.DataFrame
    cold_items: frozenset[str]
    protocol: str

    def describe(self) -> str:
        return (
            f"{self.protocol}: {self.fit_events.height} fit events, {self.test['user_id'].n_unique()} test users, "
            f"{self.valid['user_id'].n_unique()} validation users, {len(self.cold_items)} cold items"
        )


def _targets(baskets: pl.DataFrame) -> pl.DataFrame:
    return (
        baskets.select("user_id", "basket_id", "time", "items")
        .explode("items")
        .rename({"items": "item_id"})
        .select("user_id", "item_id", "basket_id", "time")
    )


def _before(events: pl.DataFrame, cut: pl.DataFrame) -> pl.DataFrame:
    """Events of users in `cut` strictly before their cut time; other users' events whole."""
    joined = events.join(cut.select("user_id", pl.col("time").alias("_cut")), on="user_id", how="left")
    return joined.filter(pl.col("_cut").is_null() | (pl.col("timestamp") < pl.col("_cut"))).drop("_cut")


def _cold(items: pl.Series | None, fit_events: pl.DataFrame, candidates: pl.Series) -> frozenset[str]:
    seen = set(fit_events["item_id"].unique().to_list())
    pool = items if items is not None else candidates
    return frozenset(i for i in pool.unique().to_list() if i not in seen)


def session_starts(events: pl.DataFrame, baskets: pl.DataFrame, gap: timedelta = DEFAULT_SESSION_GAP) -> pl.DataFrame:
    """For each basket, the start of the browsing session it closes: walking back from the basket
    over the user's events while consecutive events are at most `gap` apart. Returns baskets with
    `time` replaced by that start."""
    gap_us = int(gap.total_seconds() * 1_000_000)
    sessions = (
        events.select("user_id", "timestamp", "basket_id")
        .sort(["user_id", "timestamp"])
        .with_columns(
            (pl.col("timestamp").diff().over("user_id").dt.total_microseconds().fill_null(gap_us + 1) > gap_us)
            .cum_sum()
            .over("user_id")
            .alias("_session")
        )
        .with_columns(pl.col("timestamp").min().over("user_id", "_session").alias("_start"))
    )
    starts = (
        sessions.filter(pl.col("basket_id").is_not_null())
        .group_by("basket_id")
        .agg(pl.col("_start").min())
    )
    return baskets.join(starts, on="basket_id", how="left").with_columns(
        pl.min_horizontal("time", pl.col("_start").fill_null(pl.col("time"))).alias("time")
    ).drop("_start")


def leave_last_out(
    events: pl.DataFrame,
    item_ids: pl.Series | None = None,
    min_train_baskets: int = 1,
    session_gap: timedelta | None = DEFAULT_SESSION_GAP,
) -> Split:
    """Per-user temporal leave-last-out over purchase baskets (needs `basket_id`, see assign_baskets).

    A user is a test user when they have at least `min_train_baskets` baskets before the last one,
    and a validation user when they also have that many before the second-to-last.

    History is cut at the start of the browsing session that ends in the target basket (views,
    clicks and carts less than `session_gap` apart before it), not at the basket itself: the
    items carted minutes before checkout would otherwise give the answer away. `session_gap=None`
    cuts at the basket.
    """
    if "basket_id" not in events.columns:
        raise DataError("events have no basket_id column: call recs.data.assign_baskets first")
    baskets = basket_table(events).with_columns(
        pl.col("time").rank("ordinal").over("user_id").alias("_n"),
        pl.len().over("user_id").alias("_total"),
    )
    # Baskets at the same instant as the target would leak through `timestamp < cut`; ordinal ranks
    # by time then basket_id keep the cut well defined.
    test_b = baskets.filter((pl.col("_n") == pl.col("_total")) & (pl.col("_total") > min_train_baskets))
    valid_b = baskets.filter(
        (pl.col("_n") == pl.col("_total") - 1) & (pl.col("_total") > min_train_baskets + 1)
    )
    if session_gap is not None:
        test_cut = session_starts(events, test_b, session_gap)
        valid_cut = session_starts(events, valid_b, session_gap)
    else:
        test_cut, valid_cut = test_b, valid_b
    fit_events = _strictly_before_basket(events, test_cut)
    tune_events = _strictly_before_basket(fit_events, valid_cut)
    test = _targets(test_b)
    return Split(
        fit_events=fit_events,
        tune_events=tune_events,
        test=test,
        valid=_targets(valid_b),
        cold_items=_cold(item_ids, fit_events, test["item_id"]),
        protocol="leave_last_out",
    )


def last_baskets_of_size(
    events: pl.DataFrame,
    min_items: int,
    item_ids: pl.Series | None = None,
    max_users: int | None = None,
    seed: int = 0,
    session_gap: timedelta | None = DEFAULT_SESSION_GAP,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per user, the last purchase basket with at least `min_items` distinct items (of `item_ids`,
    when given) and an earlier basket; at most `max_users` users, a seeded sample. Returns
    (targets, as `Split.test`; the events with each chosen user's history cut as
    `leave_last_out` cuts it: the basket, its browsing session and everything after them gone;
    other users' events whole). For learning from baskets of a given size: a user's very last
    basket is often a one-item re-buy."""
    if "basket_id" not in events.columns:
        raise DataError("events have no basket_id column: call recs.data.assign_baskets first")
    baskets = basket_table(events).with_columns(pl.col("time").rank("ordinal").over("user_id").alias("_n"))
    known = pl.col("items") if item_ids is None else pl.col("items").list.set_intersection(item_ids.unique().implode())
    chosen = (
        baskets.filter((known.list.len() >= min_items) & (pl.col("_n") > 1))
        .group_by("user_id").agg(pl.all().sort_by("_n").last())
        .sort("user_id")
    )
    if max_users is not None and chosen.height > max_users:
        chosen = chosen.sample(max_users, seed=seed).sort("user_id")
    cut = session_starts(events, chosen, session_gap) if session_gap is not None else chosen
    return _targets(chosen), _strictly_before_basket(events, cut)


def _strictly_before_basket(events: pl.DataFrame, target_baskets: pl.DataFrame) -> pl.DataFrame:
    """Drop, for each target user, the target basket's rows and everything at or after its time."""
    kept = _before(events, target_baskets)
    return kept.filter(~pl.col("basket_id").is_in(target_baskets["basket_id"].implode()) | pl.col("basket_id").is_null())


def time_split(events: pl.DataFrame, cutoff: datetime, item_ids: pl.Series | None = None) -> Split:
    """Global cut-off: train on events before `cutoff`; each user's first basket at or after it is the
    test target (users with no basket before the cut-off are kept: they are cold users). Validation is
    each user's last basket before the cut-off."""
    if "basket_id" not in events.columns:
        raise DataError("events have no basket_id column: call recs.data.assign_baskets first")
    if cutoff.tzinfo is None:
        raise DataError("time_split cutoff must be timezone-aware (UTC)")
    fit_events = events.filter(pl.col("timestamp") < cutoff)
    after = basket_table(events.filter(pl.col("timestamp") >= cutoff))
    test_b = after.group_by("user_id").agg(pl.all().sort_by("time").first())
    before = basket_table(fit_events)
    valid_b = before.group_by("user_id").agg(pl.all().sort_by("time").last())
    tune_events = _strictly_before_basket(fit_events, valid_b)
    test = _targets(test_b)
    return Split(
        fit_events=fit_events,
        tune_events=tune_events,
        test=test.sort("user_id", "item_id"),
        valid=_targets(valid_b).sort("user_id", "item_id"),
        cold_items=_cold(item_ids, fit_events, test["item_id"]),
        protocol="time_split",
    )
