"""Data loading and cleaning configs (the `[data]` section of a recs TOML)."""

from __future__ import annotations

from pydantic import Field

from recs.configmodel import OnBadRows, StrictModel


class CleaningConfig(StrictModel):
    drop_duplicate_events: bool = True
    drop_non_positive_quantity: bool = True
    # Orders whose id starts with this prefix are cancellations (e.g. "C" in many ERP exports).
    cancellation_prefix: str | None = None
    # A user with more events than this on one day is treated as a bot and removed; None disables.
    bot_max_events_per_day: int | None = Field(default=2000, ge=1)
    # A user whose events are nearly all views, with this many or more, is treated as a crawler.
    bot_min_views_without_purchase: int | None = Field(default=5000, ge=1)


class DataConfig(StrictModel):
    on_bad_rows: OnBadRows = "error"
    session_gap_minutes: float = Field(default=30.0, gt=0)
    cleaning: CleaningConfig = CleaningConfig()
