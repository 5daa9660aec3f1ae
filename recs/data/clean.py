"""Cleaning of a validated behaviour log: duplicates, cancellations, bots. Never modifies input."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from recs.data.config import CleaningConfig


@dataclass
class CleaningReport:
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> rows
    bot_users: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"events: {n} rows dropped ({reason})" for reason, n in sorted(self.dropped.items()) if n]
        if self.bot_users:
            shown = ", ".join(self.bot_users[:5]) + (" ..." if len(self.bot_users) > 5 else "")
            lines.append(f"events: {len(self.bot_users)} bot-like users removed ({shown})")
        return lines


def clean_events(events: pl.DataFrame, config: CleaningConfig | None = None) -> tuple[pl.DataFrame, CleaningReport]:
    config = config or CleaningConfig()
    report = CleaningReport()

    def drop(frame: pl.DataFrame, keep: pl.Expr, reason: str) -> pl.DataFrame:
        kept = frame.filter(keep)
        report.dropped[reason] += frame.height - kept.height
        return kept

    if config.drop_duplicate_events:
        before = events.height
        events = events.unique(maintain_order=True)
        report.dropped["exact duplicate event"] += before - events.height
    if config.cancellation_prefix:
        events = drop(
            events,
            pl.col("order_id").is_null() | ~pl.col("order_id").str.starts_with(config.cancellation_prefix),
            f"cancellation (order id starts with '{config.cancellation_prefix}')",
        )
    if config.drop_non_positive_quantity:
        events = drop(events, pl.col("quantity") > 0, "non-positive quantity (return or cancellation)")
    bots: set[str] = set()
    if config.bot_max_events_per_day is not None:
        per_day = events.group_by("user_id", pl.col("timestamp").dt.date().alias("_day")).len()
        bots |= set(per_day.filter(pl.col("len") > config.bot_max_events_per_day)["user_id"].to_list())
    if config.bot_min_views_without_purchase is not None:
        per_user = events.group_by("user_id").agg(
            (pl.col("event") == "view").sum().alias("views"), (pl.col("event") == "purchase").sum().alias("buys")
        )
        crawlers = per_user.filter(
            (pl.col("views") >= config.bot_min_views_without_purchase) & (pl.col("buys") == 0)
        )
        bots |= set(crawlers["user_id"].to_list())
    if bots:
        report.bot_users = sorted(bots)
        events = drop(events, ~pl.col("user_id").is_in(list(bots)), "bot-like user")
    return events, report
