"""The data contract: column names and types of items, events and bundles.

After loading, every frame has exactly these canonical dtypes, whatever the file format was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

EVENT_KINDS: tuple[str, ...] = ("view", "click", "cart", "purchase")
# How strongly each behaviour signals intent; used by training-pair weighting and text rendering.
EVENT_WEIGHT: dict[str, float] = {"view": 0.1, "click": 0.2, "cart": 0.5, "purchase": 1.0}

ITEM_REQUIRED: tuple[str, ...] = ("item_id", "title")
ITEM_OPTIONAL: dict[str, pl.DataType] = {
    "description": pl.Utf8(),
    "category": pl.Utf8(),
    "brand": pl.Utf8(),
    "price": pl.Float64(),
    "in_stock": pl.Boolean(),
    "image_url": pl.Utf8(),
}
EVENT_REQUIRED: tuple[str, ...] = ("user_id", "item_id", "timestamp")
EVENT_OPTIONAL: dict[str, pl.DataType] = {
    "event": pl.Utf8(),
    "order_id": pl.Utf8(),
    "quantity": pl.Float64(),
    "rating": pl.Float64(),
}
BUNDLE_REQUIRED: tuple[str, ...] = ("bundle_id", "item_id")
BUNDLE_OPTIONAL: dict[str, pl.DataType] = {"title": pl.Utf8()}

TIMESTAMP_DTYPE = pl.Datetime("us", "UTC")


def epoch_seconds(timestamps: pl.Series) -> np.ndarray:
    """A TIMESTAMP_DTYPE column as float64 seconds since the epoch (the statistics' and the
    histories' clock)."""
    return timestamps.dt.epoch("us").to_numpy().astype(np.float64) / 1e6

# Canonical schemas after loading. Items also keep any extra column, cast to Utf8.
ITEMS_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.Utf8(),
    "title": pl.Utf8(),
    **ITEM_OPTIONAL,
}
EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Utf8(),
    "item_id": pl.Utf8(),
    "timestamp": TIMESTAMP_DTYPE,
    "event": pl.Utf8(),
    "order_id": pl.Utf8(),
    "quantity": pl.Float64(),
    "rating": pl.Float64(),
    # Filled by recs.data.baskets.assign_baskets: order_id, or a session window of purchases.
    "basket_id": pl.Utf8(),
}
BUNDLES_SCHEMA: dict[str, pl.DataType] = {
    "bundle_id": pl.Utf8(),
    "item_id": pl.Utf8(),
    "title": pl.Utf8(),
}


@dataclass(frozen=True)
class Dataset:
    """A validated shop: catalog, behaviour log and (optionally) curated bundles.

    `items`: one row per item, ITEMS_SCHEMA columns (+ extra columns as Utf8).
    `events`: EVENTS_SCHEMA, sorted by (user_id, timestamp), every item_id in `items`,
    `basket_id` set on purchase rows (null on views, clicks and carts).
    `bundles`: BUNDLES_SCHEMA or None.
    """

    items: pl.DataFrame
    events: pl.DataFrame
    bundles: pl.DataFrame | None = None

    @property
    def n_users(self) -> int:
        return self.events["user_id"].n_unique()

    @property
    def n_items(self) -> int:
        return self.items.height

    def purchases(self) -> pl.DataFrame:
        return self.events.filter(pl.col("event") == "purchase")


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENTS_SCHEMA)


def empty_items() -> pl.DataFrame:
    return pl.DataFrame(schema=ITEMS_SCHEMA)
