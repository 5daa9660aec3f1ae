"""Rendering items and user histories as text for the BERT towers (no tokenizer needed here)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from string import Formatter

import polars as pl

from recs.data.schema import ITEM_OPTIONAL

DEFAULT_ITEM_TEMPLATE = "{title} | {category} | {brand} | {price}"
_FIELD_SEPARATOR = " | "
# Columns never rendered: identifiers, URLs and bookkeeping say nothing about what the item is.
_NOT_RENDERED = {"item_id", "image_url", "in_stock", "first_seen"}


def _format_price(value: object) -> str:
    return f"price {float(value):.2f}" if value is not None else ""


def render_item(row: Mapping[str, object], template: str = DEFAULT_ITEM_TEMPLATE) -> str:
    """`title | category | brand | price`; empty fields are left out, extra columns appended as
    `name: value`; the description (when present) closes the text."""
    fields = [name for _, name, _, _ in Formatter().parse(template) if name]
    parts: list[str] = []
    for piece in template.split(_FIELD_SEPARATOR.strip()):
        names = [n for _, n, _, _ in Formatter().parse(piece) if n]
        values = {n: _value(row, n) for n in names}
        if names and all(not v for v in values.values()):
            continue
        parts.append(piece.strip().format(**values))
    extras = [
        f"{name}: {value}"
        for name, value in row.items()
        if name not in fields
        and name not in ITEM_OPTIONAL
        and name not in _NOT_RENDERED
        and name != "title"
        and value not in (None, "")
    ]
    text = _FIELD_SEPARATOR.join(p for p in parts + extras if p)
    description = row.get("description")
    if description and "description" not in fields:
        text = f"{text}. {description}"
    return re.sub(r"\s+", " ", text).strip()


def _value(row: Mapping[str, object], name: str) -> str:
    value = row.get(name)
    if name == "price":
        return _format_price(value)
    return "" if value is None else str(value)


def render_items(items: pl.DataFrame, template: str = DEFAULT_ITEM_TEMPLATE) -> list[str]:
    return [render_item(row, template) for row in items.iter_rows(named=True)]


def render_user(
    history: Sequence[tuple[str, str]],
    max_chars: int = 512,
    count_tokens: Callable[[str], int] | None = None,
    max_tokens: int | None = None,
    cold_start_text: str = "",
) -> str:
    """History as `purchase: title ; view: title ; ...`, most recent first, each item once.

    `history` is (event, title) pairs in chronological order. The text is cut at whole entries by
    `max_chars`, or by `max_tokens` when a token counter is given. An empty history renders
    `cold_start_text` (the session context or a search query)."""
    if not history:
        return cold_start_text.strip()
    entries: list[str] = []
    shown: set[str] = set()
    used = 0
    for event, title in reversed(history):
        # Distinct items only (the most recent event of each): a staple bought every week would
        # otherwise fill the user tower's few tokens with one title.
        if title in shown:
            continue
        shown.add(title)
        entry = f"{event}: {title}"
        cost = count_tokens(entry) if count_tokens is not None and max_tokens is not None else len(entry) + 3
        budget = max_tokens if count_tokens is not None and max_tokens is not None else max_chars
        if entries and used + cost > budget:
            break
        entries.append(entry)
        used += cost
    text = " ; ".join(entries)
    if cold_start_text:
        text = f"{cold_start_text.strip()} ; {text}"
    return text if len(text) <= max_chars or count_tokens is not None else text[:max_chars]


def user_histories(
    events: pl.DataFrame, items: pl.DataFrame, max_events: int = 50
) -> dict[str, list[tuple[str, str]]]:
    """user -> chronological (event, title) pairs of their last `max_events` events."""
    titled = (
        events.select("user_id", "item_id", "event", "timestamp")
        .join(items.select("item_id", "title"), on="item_id", how="inner")
        .sort(["user_id", "timestamp"])
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("event").tail(max_events), pl.col("title").tail(max_events))
    )
    return {
        row["user_id"]: list(zip(row["event"], row["title"], strict=True))
        for row in titled.iter_rows(named=True)
    }
