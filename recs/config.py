"""Pydantic configs (`extra="forbid"`: a typo is an error, not a silent default), loadable from TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recs.errors import ConfigError

OnBadRows = Literal["error", "skip"]
UnknownUserPolicy = Literal["raise", "warn", "fallback"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_toml(cls, path: str | Path, section: str | None = None) -> Self:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{path}: cannot read TOML: {err}") from None
        if section is not None:
            data = data.get(section, {})
        return cls.parse_dict(data, source=str(path))

    @classmethod
    def parse_dict(cls, data: dict, source: str = "config") -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            raise ConfigError(f"{source}: {where}: {first['msg']}") from None


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
    item_template: str = "{title} | {category} | {brand} | {price}"
    user_text_max_chars: int = Field(default=512, ge=16)
