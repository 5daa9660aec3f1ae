"""Data loading and cleaning configs (the `[data]` section of a recs TOML)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from recs.configmodel import OnBadRows, StrictModel
from recs.errors import ConfigError


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
    # Under `skip`, every dropped row and nulled value is listed here (CSV; relative to the current
    # folder), written only when there is something to list.
    skip_report: Path = Path("recs-skipped-rows.csv")
    session_gap_minutes: float = Field(default=30.0, gt=0)
    cleaning: CleaningConfig = CleaningConfig()

    @field_validator("skip_report")
    @classmethod
    def _csv_report(cls, value: Path) -> Path:
        # ConfigError passes through pydantic untouched: one clean line for the option and the TOML.
        if value.suffix.lower() != ".csv":
            raise ConfigError(f"the skip report (--skip-report, or skip_report in the data section) must be a .csv file, got '{value}'")
        return value
