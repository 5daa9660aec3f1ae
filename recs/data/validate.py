"""Validation and coercion of raw tables into the canonical frames of `schema.py`.

Every problem is reported with file, row (1-based data row; for CSV the file line is row + 1)
and column. Callers decide the policy: `error` stops at the first report, `skip` drops a row whose
required field is bad and sets a bad optional field (price, in_stock, quantity, rating) to null.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from recs.data.io import write_table_atomic
from recs.data.schema import (
    BUNDLE_REQUIRED,
    BUNDLES_SCHEMA,
    EVENT_KINDS,
    EVENT_REQUIRED,
    ITEM_OPTIONAL,
    ITEM_REQUIRED,
    TIMESTAMP_DTYPE,
)

_ISO_FORMATS: tuple[str, ...] = (
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%:z",
    "%Y-%m-%dT%H:%M%:z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)
_TRUE = ("true", "1", "yes", "y", "t")
_FALSE = ("false", "0", "no", "n", "f")
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"

# What `skip` does with a problem's row: drop it (a required field is bad) or keep it with the bad
# optional value set to null (then to the column's default where it has one).
ROW_DROPPED = "row dropped"
SET_TO_NULL = "set to null"
REPORT_COLUMNS: tuple[str, ...] = ("file", "row", "column", "kind", "message", "action")


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None  # 1-based data row; None for file-level problems
    column: str | None
    message: str
    kind: str
    action: str = ROW_DROPPED

    @property
    def nulled(self) -> bool:
        return self.action != ROW_DROPPED

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f" row {self.row}"
        if self.column is not None:
            where += f", column {self.column}"
        return f"{where}: {self.message}"


@dataclass
class ValidationReport:
    problems: list[Problem] = field(default_factory=list)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (file, kind) -> rows dropped
    nulled: Counter[tuple[str, str]] = field(default_factory=Counter)  # (file, kind) -> values set to null

    @property
    def ok(self) -> bool:
        return not self.problems

    def extend(self, problems: list[Problem]) -> None:
        # Row order reads best: all problems of row 3 before those of row 4.
        self.problems.extend(sorted(problems, key=lambda p: (p.row or 0)))

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter((p.file, p.kind) for p in self.problems)

    def summary_lines(self) -> list[str]:
        # In the order met: items before events, as the cascade of dropped items runs.
        dropped = [f"{file}: {n} rows dropped ({kind})" for (file, kind), n in self.dropped.items()]
        nulled = [f"{file}: {n} values set to null ({kind})" for (file, kind), n in self.nulled.items()]
        return dropped + nulled

    def write_csv(self, path: str | Path) -> Path:
        """Every row problem as CSV (file,row,column,kind,message,action), written atomically."""
        rows = [p for p in self.problems if p.row is not None]
        frame = pl.DataFrame(
            {name: [getattr(p, name) for p in rows] for name in REPORT_COLUMNS},
            schema={name: pl.Int64 if name == "row" else pl.Utf8 for name in REPORT_COLUMNS},
        )
        return write_table_atomic(frame, Path(path))


class _Collector:
    """Accumulates per-row problems for one file and the mask of rows to drop."""

    def __init__(self, frame: pl.DataFrame, file: str) -> None:
        self.file = file
        self.n = frame.height
        self.problems: list[Problem] = []
        self.bad = pl.Series("bad", [False] * self.n, dtype=pl.Boolean)

    def flag(
        self, mask: pl.Series, column: str, kind: str, message_of: pl.Series | str, action: str = ROW_DROPPED
    ) -> None:
        """Report the rows of `mask`; only ROW_DROPPED problems mark their rows for dropping (the
        caller nulls the values of the others)."""
        mask = mask.fill_null(False)
        if not mask.any():
            return
        rows = mask.arg_true()
        messages = (
            [message_of] * len(rows)
            if isinstance(message_of, str)
            else message_of.gather(rows).to_list()
        )
        for row, message in zip(rows.to_list(), messages, strict=True):
            self.problems.append(Problem(self.file, row + 1, column, message, kind, action))
        if action == ROW_DROPPED:
            self.bad = self.bad | mask

    def finish(self) -> tuple[list[Problem], pl.Series]:
        """Problems in row order, a dropped row's reasons first; a nulled value in a dropped row is
        dropped with it."""
        dropped_rows = set((self.bad.arg_true() + 1).to_list())
        ordered = sorted(self.problems, key=lambda p: (p.row or 0, p.nulled))
        problems = [
            replace(p, action=ROW_DROPPED) if p.nulled and p.row in dropped_rows else p for p in ordered
        ]
        return problems, self.bad


def missing_columns(frame: pl.DataFrame, required: tuple[str, ...], file: str) -> list[Problem]:
    return [
        Problem(file, None, column, f"required column '{column}' is missing (found: {', '.join(frame.columns)})", "missing column")
        for column in required
        if column not in frame.columns
    ]


def _text(frame: pl.DataFrame, column: str) -> pl.Series:
    """Column as stripped text; absent column -> all null."""
    if column not in frame.columns:
        return pl.Series(column, [None] * frame.height, dtype=pl.Utf8)
    series = frame[column]
    if series.dtype != pl.Utf8:
        series = series.cast(pl.Utf8)
    return series.str.strip_chars()


def _quoted(series: pl.Series) -> pl.Series:
    return pl.Series(["'" + str(v)[:60] + "'" for v in series.to_list()], dtype=pl.Utf8)


def _null_where(values: pl.Series, mask: pl.Series) -> pl.Series:
    return pl.select(pl.when(mask.fill_null(False)).then(None).otherwise(values)).to_series().rename(values.name)


def parse_float(frame: pl.DataFrame, column: str, out: _Collector, action: str = SET_TO_NULL) -> pl.Series:
    """An optional number column: a value that is not a finite number is reported and set to null."""
    if column not in frame.columns:
        return pl.Series(column, [None] * frame.height, dtype=pl.Float64)
    raw = frame[column]
    if raw.dtype.is_numeric():
        parsed = raw.cast(pl.Float64)
    else:
        text = _text(frame, column)
        empty = text.is_null() | (text == "")
        parsed = text.cast(pl.Float64, strict=False)
        out.flag(~empty & parsed.is_null(), column, "not a number", _quoted(text) + " is not a number", action)
        parsed = pl.select(pl.when(empty).then(None).otherwise(parsed)).to_series()
    not_finite = parsed.is_nan() | parsed.is_infinite()
    out.flag(not_finite, column, "NaN or infinite", "NaN or infinite value", action)
    return _null_where(parsed, not_finite).rename(column)


def parse_bool(frame: pl.DataFrame, column: str, out: _Collector, action: str = SET_TO_NULL) -> pl.Series:
    """An optional true/false column: any other value is reported and set to null."""
    if column not in frame.columns:
        return pl.Series(column, [None] * frame.height, dtype=pl.Boolean)
    raw = frame[column]
    if raw.dtype == pl.Boolean:
        return raw
    text = _text(frame, column).str.to_lowercase()
    parsed = pl.select(
        pl.when(text.is_in(_TRUE)).then(True).when(text.is_in(_FALSE)).then(False).otherwise(None)
    ).to_series()
    empty = text.is_null() | (text == "")
    out.flag(~empty & parsed.is_null(), column, "not a boolean", _quoted(text) + " is not true/false", action)
    return parsed.rename(column)


def parse_timestamp(frame: pl.DataFrame, column: str, out: _Collector) -> pl.Series:
    """ISO-8601 (with or without offset; date only) or epoch seconds, to UTC microseconds."""
    raw = frame[column]
    if isinstance(raw.dtype, pl.Datetime):
        parsed = raw.dt.replace_time_zone("UTC") if raw.dtype.time_zone is None else raw.dt.convert_time_zone("UTC")
        parsed = parsed.cast(TIMESTAMP_DTYPE)
    elif raw.dtype == pl.Date:
        parsed = raw.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    elif raw.dtype.is_numeric():
        parsed = _from_epoch(raw.cast(pl.Float64))
    else:
        text = _text(frame, column)
        is_number = text.str.contains(_NUMBER).fill_null(False)
        epoch = _from_epoch(pl.select(pl.when(is_number).then(text.cast(pl.Float64, strict=False))).to_series())
        norm = text.str.replace(r"[Zz]$", "+00:00").str.replace(" ", "T")
        candidates = [epoch]
        for fmt in _ISO_FORMATS:
            parsed_fmt = norm.str.to_datetime(format=fmt, strict=False, time_unit="us")
            if parsed_fmt.dtype.time_zone is None:
                parsed_fmt = parsed_fmt.dt.replace_time_zone("UTC")
            else:
                parsed_fmt = parsed_fmt.dt.convert_time_zone("UTC")
            candidates.append(parsed_fmt.cast(TIMESTAMP_DTYPE))
        parsed = pl.select(pl.coalesce(candidates)).to_series()
        empty = text.is_null() | (text == "")
        out.flag(empty, column, "missing timestamp", "timestamp is empty")
        out.flag(
            ~empty & parsed.is_null(),
            column,
            "unparseable timestamp",
            _quoted(text) + " is not an ISO-8601 time or epoch seconds",
        )
    if raw.dtype != pl.Utf8:
        out.flag(parsed.is_null(), column, "missing timestamp", "timestamp is empty")
    return parsed.rename(column)


def _from_epoch(seconds: pl.Series) -> pl.Series:
    valid = seconds.is_finite().fill_null(False) & (seconds.abs() < 1e11)
    micros = pl.select(pl.when(valid).then((seconds * 1_000_000).round(0).cast(pl.Int64))).to_series()
    return micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _required_text(frame: pl.DataFrame, column: str, out: _Collector, what: str) -> pl.Series:
    text = _text(frame, column)
    out.flag(text.is_null() | (text == ""), column, f"empty {what}", f"{what} is empty")
    return text


def dropped_item_ids(item_id: pl.Series, bad: pl.Series, file: str) -> dict[str, str]:
    """Ids whose every row was dropped -> where the first was ("items.csv row 4"): their events
    then say why the item is unknown."""
    kept = set(item_id.filter(~bad).to_list())
    where: dict[str, str] = {}
    for row in bad.arg_true().to_list():
        value = item_id[row]
        if value and value not in kept:
            where.setdefault(value, f"{file} row {row + 1}")
    return where


def _flag_unknown_items(
    item_id: pl.Series, known_items: pl.Series | None, out: _Collector, kind: str, dropped: dict[str, str] | None
) -> None:
    """Rows naming an item that is not in the catalog (empty ids are flagged elsewhere); an item
    dropped from the catalog file is named as such, so the cascade is visible."""
    if known_items is None:
        return
    unknown = item_id.is_not_null() & (item_id != "") & ~item_id.is_in(known_items.implode())
    if not unknown.any():
        return
    where = pl.Series([None] * len(item_id), dtype=pl.Utf8)
    if dropped:
        where = item_id.replace_strict(list(dropped), list(dropped.values()), default=None, return_dtype=pl.Utf8)
    quoted = "item " + _quoted(item_id)
    message = pl.select(
        pl.when(where.is_not_null())
        .then(quoted + " was dropped above (" + where + ")")
        .otherwise(quoted + " is not in the catalog")
    ).to_series()
    out.flag(unknown, "item_id", kind, message)


def future_timestamps(events: pl.DataFrame, file: str) -> str | None:
    """A warning line when some events are later than now (a clock or unit mistake, usually)."""
    if events.height == 0:
        return None
    future = events["timestamp"].filter(events["timestamp"] > datetime.now(UTC))
    if future.len() == 0:
        return None
    return f"{file}: {future.len()} events have a timestamp in the future (latest {future.max()}); they are kept"


def validate_items(raw: pl.DataFrame, file: str) -> tuple[pl.DataFrame, list[Problem], pl.Series]:
    """Coerce an items table. Returns (canonical items, problems, bad-row mask)."""
    out = _Collector(raw, file)
    item_id = _required_text(raw, "item_id", out, "item_id")
    title = _required_text(raw, "title", out, "title")
    duplicated = item_id.is_duplicated() & ~item_id.is_first_distinct() & item_id.is_not_null()
    out.flag(duplicated, "item_id", "duplicate item id", "duplicate item_id " + _quoted(item_id) + " (first seen earlier)")
    price = parse_float(raw, "price", out)
    negative = price < 0
    out.flag(negative, "price", "negative price", "negative price " + price.cast(pl.Utf8).fill_null(""), SET_TO_NULL)
    price = _null_where(price, negative)
    in_stock = parse_bool(raw, "in_stock", out, f"{SET_TO_NULL} (in stock by default)").fill_null(True)
    columns = {"item_id": item_id, "title": title, "price": price, "in_stock": in_stock}
    for name in ITEM_OPTIONAL:
        if name not in columns:
            text = _text(raw, name)
            columns[name] = pl.select(pl.when(text == "").then(None).otherwise(text)).to_series().rename(name)
    extras = {c: _text(raw, c) for c in raw.columns if c not in ITEM_REQUIRED and c not in ITEM_OPTIONAL}
    items = pl.DataFrame({**{name: columns[name] for name in ("item_id", "title", *ITEM_OPTIONAL)}, **extras})
    return items, *out.finish()


def validate_events(
    raw: pl.DataFrame, file: str, known_items: pl.Series | None, dropped_items: dict[str, str] | None = None
) -> tuple[pl.DataFrame, list[Problem], pl.Series]:
    """Coerce an events table; `known_items` (catalog ids) flags events for unknown items,
    `dropped_items` (from `dropped_item_ids`) says which of them were dropped from the catalog."""
    out = _Collector(raw, file)
    user_id = _required_text(raw, "user_id", out, "user_id")
    item_id = _required_text(raw, "item_id", out, "item_id")
    timestamp = parse_timestamp(raw, "timestamp", out)
    event = _text(raw, "event").str.to_lowercase()
    event = pl.select(pl.when(event.is_null() | (event == "")).then(pl.lit("purchase")).otherwise(event)).to_series()
    out.flag(
        ~event.is_in(EVENT_KINDS),
        "event",
        "unknown event kind",
        _quoted(event) + f" is not one of {'|'.join(EVENT_KINDS)}",
    )
    order_id = _text(raw, "order_id")
    order_id = pl.select(pl.when(order_id == "").then(None).otherwise(order_id)).to_series()
    quantity = parse_float(raw, "quantity", out, f"{SET_TO_NULL} (quantity 1 by default)").fill_null(1.0)
    rating = parse_float(raw, "rating", out)
    _flag_unknown_items(item_id, known_items, out, "event for unknown item", dropped_items)
    events = pl.DataFrame(
        {
            "user_id": user_id,
            "item_id": item_id,
            "timestamp": timestamp,
            "event": event,
            "order_id": order_id,
            "quantity": quantity,
            "rating": rating,
        }
    )
    return events, *out.finish()


def validate_bundles(
    raw: pl.DataFrame, file: str, known_items: pl.Series | None, dropped_items: dict[str, str] | None = None
) -> tuple[pl.DataFrame, list[Problem], pl.Series]:
    out = _Collector(raw, file)
    bundle_id = _required_text(raw, "bundle_id", out, "bundle_id")
    item_id = _required_text(raw, "item_id", out, "item_id")
    _flag_unknown_items(item_id, known_items, out, "bundle item not in catalog", dropped_items)
    title = _text(raw, "title")
    bundles = pl.DataFrame({"bundle_id": bundle_id, "item_id": item_id, "title": title}, schema=BUNDLES_SCHEMA)
    return bundles, *out.finish()


REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "items": ITEM_REQUIRED,
    "events": EVENT_REQUIRED,
    "bundles": BUNDLE_REQUIRED,
}
