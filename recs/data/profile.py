"""User profiles from history: what a user buys, when, how much and at what price."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl

from recs.data.category import top_expr
from recs.data.schema import Dataset
from recs.errors import UnknownUserError


def user_profiles(events: pl.DataFrame, items: pl.DataFrame, now: datetime | None = None) -> pl.DataFrame:
    """One row per user: counts, recency (days), frequency (orders per 30 days), mean basket size,
    price band (p25 / median / p75 of purchased prices), top categories (leaf and top level) and brands."""
    if now is None:
        now = events["timestamp"].max() if events.height else datetime.now().astimezone()
    joined = events.join(
        items.select("item_id", "category", "brand", "price"), on="item_id", how="left"
    ).with_columns(top_expr(pl.col("category")).alias("top_category"))
    purchases = joined.filter(pl.col("event") == "purchase")
    base = joined.group_by("user_id").agg(
        pl.len().alias("n_events"),
        (pl.col("event") == "purchase").sum().alias("n_purchases"),
        pl.col("basket_id").drop_nulls().n_unique().alias("n_orders"),
        pl.col("timestamp").min().alias("first_seen"),
        pl.col("timestamp").max().alias("last_seen"),
    )
    buys = purchases.group_by("user_id").agg(
        pl.col("price").quantile(0.25).alias("price_p25"),
        pl.col("price").median().alias("price_median"),
        pl.col("price").quantile(0.75).alias("price_p75"),
        pl.col("timestamp").max().alias("last_purchase"),
    )
    baskets = (
        purchases.group_by("user_id", "basket_id")
        .agg(pl.col("item_id").n_unique().alias("size"))
        .group_by("user_id")
        .agg(pl.col("size").mean().alias("mean_basket_size"))
    )

    def top(column: str, name: str, n: int = 3) -> pl.DataFrame:
        weights = pl.col("event").replace_strict(
            {"view": 0.1, "click": 0.2, "cart": 0.5, "purchase": 1.0}, default=0.1
        )
        return (
            joined.filter(pl.col(column).is_not_null())
            .group_by("user_id", column)
            .agg(weights.sum().alias("_w"))
            .sort(["user_id", "_w", column], descending=[False, True, False])
            .group_by("user_id", maintain_order=True)
            .agg(pl.col(column).head(n).alias(name))
        )

    profile = (
        base.join(buys, on="user_id", how="left")
        .join(baskets, on="user_id", how="left")
        .join(top("category", "top_categories"), on="user_id", how="left")
        .join(top("top_category", "top_departments"), on="user_id", how="left")
        .join(top("brand", "top_brands"), on="user_id", how="left")
    )
    span_days = ((pl.col("last_seen") - pl.col("first_seen")).dt.total_seconds() / 86400).clip(lower_bound=30.0)
    return profile.with_columns(
        ((pl.lit(now) - pl.col("last_seen")).dt.total_seconds() / 86400).round(1).alias("recency_days"),
        (pl.col("n_orders") / span_days * 30).round(2).alias("orders_per_30_days"),
    ).sort("user_id")


def user_profile(dataset: Dataset, user_id: str) -> dict[str, Any]:
    events = dataset.events.filter(pl.col("user_id") == user_id)
    if events.height == 0:
        raise UnknownUserError(f"user '{user_id}' has no events in this data")
    now = dataset.events["timestamp"].max()
    return user_profiles(events, dataset.items, now=now).row(0, named=True)
