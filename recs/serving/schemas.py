"""The HTTP service's request and response bodies (pydantic). Types and shapes are checked here
(a wrong type is a 422); values are checked where they are owned: filters by
`recs.retrieval.filters`, options by `RankOptions`, ids and policies by `recs.serving.requests`
(a bad value is a 400 naming the argument). Unknown fields are refused: a typo is not ignored."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recs.configmodel import UnknownUserPolicy

__all__ = [
    "BundleRequest",
    "BundleResponse",
    "ErrorBody",
    "EventIn",
    "EventsRequest",
    "EventsResponse",
    "ForgetResponse",
    "Health",
    "HistoryEvent",
    "HistoryResponse",
    "ItemChangeResponse",
    "ItemIn",
    "ItemOut",
    "Ready",
    "RecommendRequest",
    "RecommendResponse",
    "ReloadRequest",
    "ReloadResponse",
    "UsersResponse",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendRequest(_Body):
    user_id: str | None = Field(default=None, description="A user in the model's data.")
    history: list[str] | None = Field(default=None, description="Item ids, for someone not in the data.")
    text: str | None = Field(default=None, description="A session or a search query.")
    k: int = Field(default=10, description="How many items.")
    category: str | None = Field(default=None, description="Only this category path (or below), case-insensitive.")
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool = False
    exclude_bought: bool = False
    exclude: list[str] | None = Field(default=None, description="Item ids to leave out.")
    novelty: bool | None = Field(default=None, description="Only items new to the user (the discover shelf).")
    diversity: float | None = Field(default=None, description="0..1, maximal-marginal-relevance diversity.")
    category_cap: int | None = Field(default=None, description="At most this many items per category.")
    rerank: bool | None = Field(default=None, description="Cross-encoder on/off (None: the model's default).")
    rerank_top: int | None = None
    time_budget_ms: float | None = None
    unknown_user: UnknownUserPolicy | None = None
    include_features: bool = Field(default=False, description="Also return each item's ranking features.")

    @model_validator(mode="after")
    def _someone(self) -> RecommendRequest:
        if self.user_id is None and not self.history and not self.text:
            raise ValueError("give user_id, history or text")
        return self

    def overrides(self) -> dict[str, Any]:
        """The RankOptions fields this request sets (the others keep the model's defaults)."""
        names = ("novelty", "diversity", "category_cap", "rerank", "rerank_top", "time_budget_ms")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


class ItemOut(BaseModel):
    rank: int
    item_id: str
    title: str
    price: float | None
    score: float
    source: str
    reason: str
    stages: dict[str, float]
    features: dict[str, float] | None = None


class RecommendResponse(BaseModel):
    items: list[ItemOut]
    degraded: bool = Field(description="The cross-encoder missed its time budget: the ranker's order is served.")
    timings_ms: dict[str, float]
    model_version: str | None


class BundleRequest(_Body):
    user_id: str | None = None
    item: str | None = Field(default=None, description="An anchor item every bundle holds.")
    items: list[str] | None = Field(default=None, description="Anchor items every bundle holds.")
    size: tuple[int, int] = Field(default=(2, 4), description="[min, max] items per bundle.")
    budget: float | None = None
    n: int = 3
    in_stock: bool = True
    exclude: list[str] | None = None
    allow_same_leaf: list[str] | None = None
    history: list[str] | None = None
    text: str | None = None
    unknown_user: UnknownUserPolicy = "fallback"
    max_shared: int | None = Field(default=None, description="Non-anchor items two bundles may share (default 1).")

    @model_validator(mode="after")
    def _anchor(self) -> BundleRequest:
        if self.user_id is None and self.item is None and not self.items and not self.history and not self.text:
            raise ValueError("give user_id, item, items, history or text")
        return self


class BundleResponse(BaseModel):
    bundles: list[dict[str, Any]] = Field(description="Each: rank, items (id, title, price, category, role, reason), total_price, score, set_score, user_preference.")
    reason: str | None = Field(description="Why no bundle fits, when the list is empty.")
    model_version: str | None


class ReloadRequest(_Body):
    path: str | None = Field(default=None, description="An artifact folder; default: the one being served.")


class ReloadResponse(BaseModel):
    version: str | None
    path: str
    previous_version: str | None
    load_ms: float


class EventIn(_Body):
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    event: Literal["view", "click", "cart", "purchase"] = "purchase"
    timestamp: float | dt.datetime | None = Field(
        default=None, description="Epoch seconds or ISO-8601 (a time zone, or UTC); default: when it is stored.")
    basket_id: str | None = Field(default=None, max_length=256, description="Events with one basket_id form a basket.")

    def epoch_seconds(self) -> float | None:
        if isinstance(self.timestamp, dt.datetime):
            when = self.timestamp if self.timestamp.tzinfo else self.timestamp.replace(tzinfo=dt.UTC)
            return when.timestamp()
        return self.timestamp


class EventsRequest(_Body):
    events: list[EventIn] = Field(min_length=1, description="One or more events, stored before the answer.")


class Skipped(BaseModel):
    index: int
    reason: str


class EventsResponse(BaseModel):
    accepted: int = Field(description="Events stored (durably) and served from the next request.")
    skipped: list[Skipped] = Field(description="Events not stored, and why (an unknown item, say).")
    seq: int = Field(description="The store's last sequence number after this append.")


class ForgetResponse(BaseModel):
    user_id: str
    events_removed: int = Field(description="Events deleted from the event store.")
    known: bool = Field(description="Whether the served model knew the user.")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    version: str | None
    path: str | None
    backend: str


MAX_FIELD_CHARS = 10_000  # per item field: a catalog row, not a document


class ItemIn(BaseModel):
    """An item's fields for PUT /items/{id}: the whole item (fields left out are emptied), its
    text re-encoded when what the item tower reads changed. Extra fields (rendered into the item's
    text as `name: value`) may be strings, numbers or booleans."""

    model_config = ConfigDict(extra="allow")

    title: str = Field(min_length=1, max_length=MAX_FIELD_CHARS)
    description: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    category: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    brand: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    price: float | None = Field(default=None, ge=0)
    in_stock: bool | None = Field(default=None, description="Default: in stock.")
    image_url: str | None = Field(default=None, max_length=MAX_FIELD_CHARS)

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("title is empty")
        return value

    @field_validator("price")
    @classmethod
    def _price(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("price must be a finite number")
        return value

    @model_validator(mode="after")
    def _extras(self) -> ItemIn:
        for name, value in (self.model_extra or {}).items():
            if name == "item_id":
                raise ValueError("item_id is the path's, not a field")
            if not name.strip() or len(name) > 100:
                raise ValueError(f"field name {name[:100]!r} must be 1 to 100 characters")
            if value is not None and not isinstance(value, str | int | float | bool):
                raise ValueError(f"field {name!r} must be a string, a number or a boolean")
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                raise ValueError(f"field {name!r} is over {MAX_FIELD_CHARS} characters")
        return self

    def fields(self) -> dict[str, Any]:
        """Every field, the extra ones included (what the event store records)."""
        return self.model_dump()


class ItemChangeResponse(BaseModel):
    item_id: str
    action: Literal["added", "updated", "removed"]
    reencoded: bool = Field(description="The item was (re-)encoded by the item tower.")
class UsersResponse(BaseModel):
    users: list[str] = Field(description="Known user ids (with events in the served model), sorted.")
    total: int = Field(description="How many known user ids match the prefix.")


class HistoryEvent(BaseModel):
    item_id: str
    title: str
    price: float | None
    category: str
    event: str = Field(description="view | click | cart | purchase (as logged).")
    timestamp: str = Field(description="ISO 8601, UTC.")


class HistoryResponse(BaseModel):
    user_id: str
    events: list[HistoryEvent] = Field(description="The most recent events first, including those posted since the model was loaded.")
    total: int = Field(description="How many events the user has in all.")


class ErrorBody(BaseModel):
    error: str
