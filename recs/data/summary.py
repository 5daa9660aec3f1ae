"""A printable summary of a shop: counts, time span, basket sizes."""

from __future__ import annotations

import polars as pl

from recs.data.baskets import basket_table
from recs.data.schema import Dataset


def dataset_summary(dataset: Dataset) -> list[str]:
    events = dataset.events
    items = dataset.items
    lines = [f"items: {items.height} ({int(items['in_stock'].sum())} in stock)"]
    if "category" in items.columns and items["category"].null_count() < items.height:
        lines.append(f"categories: {items['category'].n_unique()} distinct")
    if events.height:
        kinds = events.group_by("event").len().sort("event")
        by_kind = ", ".join(f"{row['event']} {row['len']}" for row in kinds.iter_rows(named=True))
        lines.append(f"events: {events.height} ({by_kind})")
        lines.append(f"users: {events['user_id'].n_unique()}")
        lines.append(f"time span: {events['timestamp'].min()} .. {events['timestamp'].max()}")
        baskets = basket_table(events)
        if baskets.height:
            sizes = baskets["items"].list.len()
            lines.append(
                f"baskets: {baskets.height}, size mean {sizes.mean():.2f}, median {sizes.median():.0f}, max {sizes.max()}"
            )
            per_user = baskets.group_by("user_id").len()["len"]
            lines.append(
                f"baskets per user: mean {per_user.mean():.2f}, users with >= 2: {int((per_user >= 2).sum())}"
            )
        never = items.filter(~pl.col("item_id").is_in(events["item_id"].implode())).height
        lines.append(f"items never seen in events: {never}")
    else:
        lines.append("events: none")
    if dataset.bundles is not None and dataset.bundles.height:
        sizes = dataset.bundles.group_by("bundle_id").len()["len"]
        lines.append(f"bundles: {sizes.len()}, size mean {sizes.mean():.2f}")
    elif dataset.bundles is not None:
        lines.append("bundles: none")
    return lines
