"""The feedback loop over HTTP: POST /events is stored before the answer and served from the next
request (on every worker: apps sharing one store), a restart replays the store, DELETE /users
forgets a user in the store and in the served state, and a reload keeps both."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from recs.config import HttpConfig
from recs.serving.app import create_app
from recs.serving.eventstore import default_store_path, open_store

TOKEN = "feedback-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def model(ranked_artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ranked_artifact, tmp_path / "model"))


def _client(model: Path, **settings: object) -> TestClient:
    return TestClient(create_app(model, HttpConfig(warmup=False, **settings)), raise_server_exceptions=False)  # type: ignore[arg-type]


def _buyer(client: TestClient) -> str:
    events = client.app.state.holder.current.engine.retriever.events  # type: ignore[attr-defined]
    return str(events.filter(pl.col("event") == "purchase")["user_id"].sort()[0])


def _items(client: TestClient) -> list[str]:
    return client.app.state.holder.current.engine.retriever.catalog.item_ids  # type: ignore[attr-defined]


def _history(client: TestClient, user: str) -> list[str]:
    r = client.app.state.holder.current.engine.retriever  # type: ignore[attr-defined]
    arrays = r.users.arrays(user)
    return [] if arrays is None else [r.catalog.item_ids[i] for i in arrays.rows]


def test_events_are_stored_then_served_next_request(model: Path) -> None:
    client = _client(model)
    item = _items(client)[3]
    newcomer = {"user_id": "brand-new-user", "k": 5, "unknown_user": "raise"}
    assert client.post("/recommend", json=newcomer).status_code == 404
    body = {"events": [
        {"user_id": "brand-new-user", "item_id": item, "event": "purchase", "timestamp": "2030-01-01T10:00:00Z"},
        {"user_id": "brand-new-user", "item_id": "no-such-item"},
        {"user_id": "brand-new-user", "item_id": item, "event": "view"},
    ]}
    done = client.post("/events", json=body)
    assert done.status_code == 200, done.text
    out = done.json()
    assert out["accepted"] == 2 and out["seq"] == 2
    assert out["skipped"] == [{"index": 1, "reason": "events[1]: unknown item id 'no-such-item'"}]
    store = open_store(default_store_path(model))
    assert store.read()["item_id"].to_list() == [item, item]  # on disk before the answer
    assert _history(client, "brand-new-user") == [item, item]
    served = client.post("/recommend", json={**newcomer, "exclude_bought": True})
    assert served.status_code == 200 and item not in [i["item_id"] for i in served.json()["items"]]
    assert "recs_events_stored_total 2.0" in client.get("/metrics").text


def test_bad_event_bodies_are_422_and_limits_hold(model: Path) -> None:
    client = _client(model, max_events=2)
    assert client.post("/events", json={"events": []}).status_code == 422
    assert client.post("/events", json={"events": [{"user_id": "u", "item_id": "i", "event": "like"}]}).status_code == 422
    assert client.post("/events", json={"events": [{"user_id": "u"}]}).status_code == 422
    many = {"events": [{"user_id": "u", "item_id": "i"}] * 3}
    too_many = client.post("/events", json=many)
    assert too_many.status_code == 422 and "at most 2 events" in too_many.text
    off = _client(model, events="off")
    refused = off.post("/events", json={"events": [{"user_id": "u", "item_id": _items(off)[0]}]})
    assert refused.status_code == 409 and "no event store" in refused.json()["error"]


def test_other_workers_and_a_restart_see_the_events(model: Path) -> None:
    a, b = _client(model), _client(model)  # two workers of one service: one store file
    user, item = _buyer(a), _items(a)[7]
    before = _history(b, user)
    assert a.post("/events", json={"events": [{"user_id": user, "item_id": item, "timestamp": 2e9}]}).status_code == 200
    assert b.post("/recommend", json={"user_id": user, "k": 3}).status_code == 200  # b syncs before serving
    assert _history(b, user) == [*before, item]
    restarted = _client(model)
    assert _history(restarted, user) == [*before, item]


def test_forget_a_user_in_store_and_served_state_and_after_restart(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECS_ADMIN_TOKEN", TOKEN)
    a, b = _client(model), _client(model)
    user = _buyer(a)
    a.post("/events", json={"events": [{"user_id": user, "item_id": _items(a)[1]}]})
    assert a.delete(f"/users/{user}").status_code == 401
    gone = a.delete(f"/users/{user}", headers=AUTH)
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"user_id": user, "events_removed": 1, "known": True}
    ask = {"user_id": user, "k": 3, "unknown_user": "raise"}
    for client in (a, b, _client(model)):
        assert client.post("/recommend", json=ask).status_code == 404
        retriever = client.app.state.holder.current.engine.retriever  # type: ignore[attr-defined]
        assert user not in retriever.events["user_id"].to_list()
        factors = retriever.stats.factors
        assert factors is None or user not in factors._row_of
    assert open_store(default_store_path(model)).read().filter(pl.col("user_id") == user).height == 0
    # Unknown users may be forgotten too (nothing known: nothing kept), and the answer says so.
    assert a.delete("/users/nobody-at-all", headers=AUTH).json() == {"user_id": "nobody-at-all", "events_removed": 0, "known": False}


def test_reload_keeps_the_store_applied(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECS_ADMIN_TOKEN", TOKEN)
    client = _client(model)
    item = _items(client)[2]
    client.post("/events", json={"events": [{"user_id": "late-user", "item_id": item}]})
    assert client.post("/admin/reload", headers=AUTH).status_code == 200
    assert _history(client, "late-user") == [item]


def test_watched_folder_swaps_to_a_refreshed_version_without_failing_requests(model: Path) -> None:
    import threading
    import time

    from recs.serving.refresh import refresh

    client = _client(model, watch=True, watch_interval_s=0.1)
    user = _buyer(client)
    before = client.get("/ready").json()["version"]
    client.post("/events", json={"events": [{"user_id": user, "item_id": _items(client)[4]}]})
    failures: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            status = client.post("/recommend", json={"user_id": user, "k": 5}).status_code
            if status != 200:
                failures.append(status)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        refresh(model, open_store(default_store_path(model)), retrain_rankers=False, show_progress=False)
        deadline = time.monotonic() + 60
        while client.get("/ready").json()["version"] == before and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    assert client.get("/ready").json()["version"] != before
    assert failures == []
    retriever = client.app.state.holder.current.engine.retriever  # type: ignore[attr-defined]
    assert retriever.store_marks["events"] == 1 and _history(client, user)[-1] == _items(client)[4]


def test_two_services_share_a_postgresql_store(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several service processes (here two apps, each with its own connection) on one PostgreSQL
    event store: an event taken by one is served by the other; a forget reaches both."""
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg")
    monkeypatch.setenv("RECS_ADMIN_TOKEN", TOKEN)
    with pgserver.get_server(tmp_path / "pgdata", cleanup_mode="delete") as server:
        dsn = server.get_uri()
        a, b = _client(model, events=dsn), _client(model, events=dsn)
        item = _items(a)[9]
        done = a.post("/events", json={"events": [{"user_id": "pg-user", "item_id": item, "timestamp": 2e9}]})
        assert done.status_code == 200 and done.json()["accepted"] == 1
        assert b.post("/recommend", json={"user_id": "pg-user", "k": 3, "unknown_user": "raise"}).status_code == 200
        assert _history(b, "pg-user") == [item]
        assert b.delete("/users/pg-user", headers=AUTH).json()["events_removed"] == 1
        assert a.post("/recommend", json={"user_id": "pg-user", "k": 3, "unknown_user": "raise"}).status_code == 404
        for client in (a, b):
            client.app.state.store.close()  # type: ignore[attr-defined]
