"""The event store: where a service's new events, item changes and forget requests are kept,
durably, before the request that brought them is answered.

    SqliteEventStore    one file (WAL, synchronous=FULL) beside the model: the default; the
                        workers of one `recs serve` share it (SQLite locks the file)
    PostgresEventStore  a PostgreSQL DSN: several service processes, on one machine or more

Both keep four tables: `events` (seq, user_id, item_id, event, ts epoch seconds, basket_id),
`item_changes` (seq, item_id, fields as JSON or NULL for a removed item), `forgets` (seq, user_id:
a user to leave the next artifact; the row goes when `recs refresh` has written one without them)
and `audit` (when, what, how many events: never whose). Sequence numbers only grow: an artifact
records the last one it folded in (`recs refresh`), and a service replays what came after.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import polars as pl

from recs.errors import ConfigError, DataError, StoreError

__all__ = [
    "EVENT_KINDS",
    "EventStore",
    "NewEvent",
    "PostgresEventStore",
    "SqliteEventStore",
    "default_store_path",
    "open_store",
]

log = logging.getLogger("recs.serving")
T = TypeVar("T")
audit_log = logging.getLogger("recs.audit")

EVENT_KINDS = ("view", "click", "cart", "purchase")
SCHEMA_VERSION = 1
STORE_SUFFIX = ".events.sqlite"
# The highest committed seq per table (a reader compares with what it applied; appends commit in
# seq order, so nothing below a seen seq can appear later).
HEADS_SQL = (
    "SELECT (SELECT coalesce(max(seq), 0) FROM {events}), (SELECT coalesce(max(seq), 0) FROM {items}),"
    " (SELECT coalesce(max(seq), 0) FROM {forgets})"
)


@dataclass(frozen=True)
class NewEvent:
    user_id: str
    item_id: str
    event: str = "purchase"
    timestamp: float | None = None  # epoch seconds; None: when it is stored
    basket_id: str | None = None


class EventStore(Protocol):
    spec: str

    def append(self, events: Sequence[NewEvent]) -> int:
        """Store `events` durably (committed when this returns); the last sequence number."""
        ...

    def read(self, after: int = 0) -> pl.DataFrame:
        """Events with seq > `after`, in seq order: seq, user_id, item_id, timestamp, event, basket_id."""
        ...

    def forget(self, user_id: str) -> int:
        """Delete the user's events, keep a forget request for the next artifact, write an audit
        row (without the id); how many events went."""
        ...

    def forgets(self, after: int = 0) -> list[tuple[int, str]]:
        """Pending forget requests with seq > `after`: (seq, user_id)."""
        ...

    def clear_forgets(self, up_to: int) -> None:
        """Drop the forget requests with seq <= `up_to` (an artifact without those users exists)."""
        ...

    def put_item(self, item_id: str, fields: dict[str, Any] | None) -> int:
        """Record an item change (None: removed), durably; its seq."""
        ...

    def item_changes(self, after: int = 0) -> list[tuple[int, str, dict[str, Any] | None]]:
        ...

    def heads(self) -> tuple[int, int, int]:
        """The highest committed seq of (events, item changes, forgets): cheap, asked before each
        request (a deletion may lower it: readers only look for higher ones)."""
        ...

    def audit(self) -> list[dict[str, Any]]:
        ...

    def close(self) -> None:
        ...


def default_store_path(model: str | Path) -> Path:
    """`<model folder>.events.sqlite`, beside the folder (inside, the manifest would refuse it)."""
    model = Path(model).resolve()
    return model.with_name(model.name + STORE_SUFFIX)


def open_store(spec: str | Path) -> EventStore:
    """A `postgresql://` (or `postgres://`) DSN, or a SQLite file path (created when missing)."""
    text = str(spec)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresEventStore(text)
    return SqliteEventStore(Path(text))


def check_event(event: NewEvent, where: str) -> NewEvent:
    """The event with its timestamp set, or a one-line DataError naming `where`."""
    if not event.user_id or not event.item_id:
        raise DataError(f"{where}: user_id and item_id must be non-empty")
    if event.event not in EVENT_KINDS:
        raise DataError(f"{where}: event must be one of {', '.join(EVENT_KINDS)}, got {event.event!r}")
    when = time.time() if event.timestamp is None else float(event.timestamp)
    if not math.isfinite(when) or when < 0:
        raise DataError(f"{where}: timestamp must be epoch seconds >= 0, got {event.timestamp!r}")
    return NewEvent(event.user_id, event.item_id, event.event, when, event.basket_id)


def _frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    schema = {"seq": pl.Int64, "user_id": pl.Utf8, "item_id": pl.Utf8, "ts": pl.Float64, "event": pl.Utf8, "basket_id": pl.Utf8}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    return frame.with_columns(
        (pl.col("ts") * 1e6).round().cast(pl.Int64).cast(pl.Datetime("us", "UTC")).alias("timestamp")
    ).select("seq", "user_id", "item_id", "timestamp", "event", "basket_id")


def _audit_row(at: float, action: str, events: int) -> None:
    audit_log.info("%s: %s, %d events removed", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)), action, events)


class SqliteEventStore:
    """SQLite in WAL mode, synchronous=FULL: an append is on disk when it returns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.spec = str(self.path)
        self._lock = threading.Lock()  # one connection, shared by the service's threads
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
                    item_id TEXT NOT NULL, event TEXT NOT NULL, ts REAL NOT NULL, basket_id TEXT);
                CREATE INDEX IF NOT EXISTS events_user ON events (user_id);
                CREATE TABLE IF NOT EXISTS item_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    item_id TEXT NOT NULL, fields TEXT, at REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS forgets (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, at REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS audit (at REAL NOT NULL, action TEXT NOT NULL, events INTEGER NOT NULL);
                """
            )
            self._check_version()
        except sqlite3.Error as err:
            raise StoreError(f"{self.path}: cannot open the event store: {err}") from None

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise StoreError(f"{self.path}: event store schema {row[0]}, this recs reads {SCHEMA_VERSION}")

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in one write transaction (committed, or rolled back on any error)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = work(self._db)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise StoreError(f"{self.path}: cannot write the event store: {err}") from None
        return out

    def _write(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
        def work(db: sqlite3.Connection) -> int:
            db.executemany(sql, rows)
            return int(db.execute("SELECT last_insert_rowid()").fetchone()[0])

        return self._transaction(work)

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as err:
                raise StoreError(f"{self.path}: cannot read the event store: {err}") from None

    def append(self, events: Sequence[NewEvent]) -> int:
        if not events:
            return self.heads()[0]
        checked = [check_event(e, f"event {n}") for n, e in enumerate(events)]
        return self._write(
            "INSERT INTO events (user_id, item_id, event, ts, basket_id) VALUES (?, ?, ?, ?, ?)",
            [(e.user_id, e.item_id, e.event, e.timestamp, e.basket_id) for e in checked],
        )

    def read(self, after: int = 0) -> pl.DataFrame:
        return _frame(self._read("SELECT seq, user_id, item_id, ts, event, basket_id FROM events WHERE seq > ? ORDER BY seq", (after,)))

    def forget(self, user_id: str) -> int:
        now = time.time()

        def work(db: sqlite3.Connection) -> int:
            removed = db.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            db.execute("INSERT INTO forgets (user_id, at) VALUES (?, ?)", (user_id, now))
            db.execute("INSERT INTO audit VALUES (?, 'forget a user', ?)", (now, removed))
            return int(removed)

        removed = self._transaction(work)
        _audit_row(now, "forget a user", removed)
        return removed

    def forgets(self, after: int = 0) -> list[tuple[int, str]]:
        return [(int(s), str(u)) for s, u in self._read("SELECT seq, user_id FROM forgets WHERE seq > ? ORDER BY seq", (after,))]

    def clear_forgets(self, up_to: int) -> None:
        self._write("DELETE FROM forgets WHERE seq <= ?", [(up_to,)])

    def put_item(self, item_id: str, fields: dict[str, Any] | None) -> int:
        payload = None if fields is None else json.dumps(fields, sort_keys=True, allow_nan=False)
        return self._write("INSERT INTO item_changes (item_id, fields, at) VALUES (?, ?, ?)", [(item_id, payload, time.time())])

    def item_changes(self, after: int = 0) -> list[tuple[int, str, dict[str, Any] | None]]:
        rows = self._read("SELECT seq, item_id, fields FROM item_changes WHERE seq > ? ORDER BY seq", (after,))
        return [(int(s), str(i), None if f is None else json.loads(f)) for s, i, f in rows]

    def heads(self) -> tuple[int, int, int]:
        row = self._read(HEADS_SQL.format(events="events", items="item_changes", forgets="forgets"))[0]
        return int(row[0]), int(row[1]), int(row[2])

    def audit(self) -> list[dict[str, Any]]:
        return [{"at": at, "action": a, "events": n} for at, a, n in self._read("SELECT at, action, events FROM audit ORDER BY at")]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresEventStore:
    """PostgreSQL through psycopg: the store several service processes share. Appends take a
    transaction-scoped advisory lock, so sequence numbers commit in order and a reader that has
    seen seq N never misses a smaller one committed later."""

    _LOCK_KEY = 7_230_114  # any constant: the advisory lock of this store's appends

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError("a PostgreSQL event store needs psycopg: pip install 'psycopg[binary]'") from None
        self.spec = dsn
        self._psycopg = psycopg
        self._lock = threading.Lock()
        try:
            self._db = psycopg.connect(dsn, autocommit=False)
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (self._LOCK_KEY,))
                for statement in (
                    "CREATE TABLE IF NOT EXISTS recs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                    "CREATE TABLE IF NOT EXISTS recs_events (seq BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL,"
                    " item_id TEXT NOT NULL, event TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, basket_id TEXT)",
                    "CREATE INDEX IF NOT EXISTS recs_events_user ON recs_events (user_id)",
                    "CREATE TABLE IF NOT EXISTS recs_item_changes (seq BIGSERIAL PRIMARY KEY, item_id TEXT NOT NULL,"
                    " fields TEXT, at DOUBLE PRECISION NOT NULL)",
                    "CREATE TABLE IF NOT EXISTS recs_forgets (seq BIGSERIAL PRIMARY KEY, user_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
                    "CREATE TABLE IF NOT EXISTS recs_audit (at DOUBLE PRECISION NOT NULL, action TEXT NOT NULL, events BIGINT NOT NULL)",
                ):
                    self._db.execute(statement)
                self._db.execute("INSERT INTO recs_meta VALUES ('schema', %s) ON CONFLICT DO NOTHING", (str(SCHEMA_VERSION),))
                version = self._db.execute("SELECT value FROM recs_meta WHERE key = 'schema'").fetchone()[0]
        except psycopg.Error as err:
            raise StoreError(f"event store {self._safe_dsn()}: {str(err).strip().splitlines()[0]}") from None
        if version != str(SCHEMA_VERSION):
            raise StoreError(f"event store {self._safe_dsn()}: schema {version}, this recs reads {SCHEMA_VERSION}")

    def _safe_dsn(self) -> str:
        """The DSN without its password (it goes into error messages and logs)."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.spec)
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" if parts.username else host
        return urlunsplit((parts.scheme, netloc + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))

    def _run(self, work: Any, *, lock: bool = False) -> Any:
        with self._lock:
            try:
                with self._db.transaction():
                    if lock:
                        self._db.execute("SELECT pg_advisory_xact_lock(%s)", (self._LOCK_KEY,))
                    return work(self._db)
            except self._psycopg.Error as err:
                raise StoreError(f"event store {self._safe_dsn()}: {str(err).strip().splitlines()[0]}") from None

    def append(self, events: Sequence[NewEvent]) -> int:
        if not events:
            return self.heads()[0]
        checked = [check_event(e, f"event {n}") for n, e in enumerate(events)]

        def work(db: Any) -> int:
            with db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO recs_events (user_id, item_id, event, ts, basket_id) VALUES (%s, %s, %s, %s, %s)",
                    [(e.user_id, e.item_id, e.event, e.timestamp, e.basket_id) for e in checked],
                )
            return int(db.execute("SELECT currval(pg_get_serial_sequence('recs_events', 'seq'))").fetchone()[0])

        return int(self._run(work, lock=True))

    def read(self, after: int = 0) -> pl.DataFrame:
        rows = self._run(lambda db: db.execute(
            "SELECT seq, user_id, item_id, ts, event, basket_id FROM recs_events WHERE seq > %s ORDER BY seq", (after,)).fetchall())
        return _frame(rows)

    def forget(self, user_id: str) -> int:
        now = time.time()

        def work(db: Any) -> int:
            removed = db.execute("DELETE FROM recs_events WHERE user_id = %s", (user_id,)).rowcount
            db.execute("INSERT INTO recs_forgets (user_id, at) VALUES (%s, %s)", (user_id, now))
            db.execute("INSERT INTO recs_audit VALUES (%s, 'forget a user', %s)", (now, removed))
            return int(removed)

        removed = int(self._run(work, lock=True))
        _audit_row(now, "forget a user", removed)
        return removed

    def forgets(self, after: int = 0) -> list[tuple[int, str]]:
        rows = self._run(lambda db: db.execute("SELECT seq, user_id FROM recs_forgets WHERE seq > %s ORDER BY seq", (after,)).fetchall())
        return [(int(s), str(u)) for s, u in rows]

    def clear_forgets(self, up_to: int) -> None:
        self._run(lambda db: db.execute("DELETE FROM recs_forgets WHERE seq <= %s", (up_to,)))

    def put_item(self, item_id: str, fields: dict[str, Any] | None) -> int:
        payload = None if fields is None else json.dumps(fields, sort_keys=True, allow_nan=False)
        return int(self._run(lambda db: db.execute(
            "INSERT INTO recs_item_changes (item_id, fields, at) VALUES (%s, %s, %s) RETURNING seq",
            (item_id, payload, time.time())).fetchone()[0], lock=True))

    def item_changes(self, after: int = 0) -> list[tuple[int, str, dict[str, Any] | None]]:
        rows = self._run(lambda db: db.execute(
            "SELECT seq, item_id, fields FROM recs_item_changes WHERE seq > %s ORDER BY seq", (after,)).fetchall())
        return [(int(s), str(i), None if f is None else json.loads(f)) for s, i, f in rows]

    def heads(self) -> tuple[int, int, int]:
        sql = HEADS_SQL.format(events="recs_events", items="recs_item_changes", forgets="recs_forgets")
        row = self._run(lambda db: db.execute(sql).fetchone())
        return int(row[0]), int(row[1]), int(row[2])

    def audit(self) -> list[dict[str, Any]]:
        rows = self._run(lambda db: db.execute("SELECT at, action, events FROM recs_audit ORDER BY at").fetchall())
        return [{"at": at, "action": a, "events": int(n)} for at, a, n in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
