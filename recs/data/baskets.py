"""Baskets: which purchase rows were bought together."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

DEFAULT_SESSION_GAP = timedelta(minutes=30)


def assign_baskets(events: pl.DataFrame, session_gap: timedelta = DEFAULT_SESSION_GAP) -> pl.DataFrame:
    """Set `basket_id` on purchase rows; null elsewhere.

    A purchase with an `order_id` belongs to basket `o:<order_id>`. Purchases without one are grouped
    per user into session windows: a gap longer than `session_gap` starts a new basket
    `s:<user_id>:<n>`. Returns the frame sorted by (user_id, timestamp, item_id).
    """
    events = events.sort(["user_id", "timestamp", "item_id"])
    is_purchase = pl.col("event") == "purchase"
    gap_us = int(session_gap.total_seconds() * 1_000_000)
    purchases_without_order = events.filter(is_purchase & pl.col("order_id").is_null()).with_row_index(
        "_row"
    )
    session_ids = (
        purchases_without_order.with_columns(
            (
                pl.col("timestamp").diff().over("user_id").dt.total_microseconds().fill_null(gap_us + 1)
                > gap_us
            )
            .cum_sum()
            .over("user_id")
            .alias("_session")
        )
        .select(
            "_row",
            pl.concat_str([pl.lit("s:"), pl.col("user_id"), pl.lit(":"), pl.col("_session").cast(pl.Utf8)]).alias(
                "_sid"
            ),
        )
    )
    events = events.with_row_index("_all")
    marker = events.filter(is_purchase & pl.col("order_id").is_null()).select("_all").with_row_index("_row")
    session_ids = marker.join(session_ids, on="_row").select("_all", "_sid")
    events = events.join(session_ids, on="_all", how="left")
    events = events.with_columns(
        pl.when(is_purchase & pl.col("order_id").is_not_null())
        .then(pl.concat_str([pl.lit("o:"), pl.col("order_id")]))
        .when(is_purchase)
        .then(pl.col("_sid"))
        .otherwise(None)
        .alias("basket_id")
    ).drop("_all", "_sid")
    return events


def basket_table(events: pl.DataFrame) -> pl.DataFrame:
    """One row per basket: basket_id, user_id, time (first purchase), items (distinct, list[str])."""
    return (
        events.filter(pl.col("basket_id").is_not_null())
        .group_by("basket_id")
        .agg(
            pl.col("user_id").first(),
            pl.col("timestamp").min().alias("time"),
            pl.col("item_id").unique(maintain_order=True).alias("items"),
        )
        .sort(["user_id", "time", "basket_id"])
    )
