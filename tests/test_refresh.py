"""`recs refresh` folds the event store into a new artifact version; `recs forget` removes a user
from the store and the model, and after it no file of the refreshed artifact holds their id."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recs.artifacts import open_artifact
from recs.cli import app
from recs.retrieval.retriever import Retriever
from recs.serving import Engine
from recs.serving.eventstore import NewEvent, open_store


@pytest.fixture()
def model(ranked_artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ranked_artifact, tmp_path / "model"))


def _run(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done.output


def _heaviest_buyer(events: pl.DataFrame) -> str:
    buys = events.filter(pl.col("event") == "purchase")
    return str(buys.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])["user_id"][0])


def test_refresh_folds_the_store_into_a_new_version(model: Path, tmp_path: Path) -> None:
    before = Retriever.load(model)
    created = open_artifact(model).created
    items = before.catalog.item_ids
    store = open_store(tmp_path / "events.sqlite")
    t = float(before.stats.now) + 3600
    store.append([NewEvent("shopper-new", items[5], "purchase", t, "o1"), NewEvent("shopper-new", items[6], "purchase", t, "o1"),
                  NewEvent("shopper-new", items[5], "purchase", t + 86400 * 7, "o2"), NewEvent("shopper-new", "gone-item", "view", t)])
    out = _run("refresh", "--model", str(model), "--events", str(tmp_path / "events.sqlite"))
    assert "3 new from the store" in out and "rankers" in out
    after = Retriever.load(model)
    assert open_artifact(model).created != created
    assert after.events.height == before.events.height + 3
    assert after.store_marks == {"events": 4, "items": 0, "forgets": 0}
    assert after.stats.popularity[after.catalog.row_of[items[5]]] == before.stats.popularity[before.catalog.row_of[items[5]]] + 2
    assert after.events.filter(pl.col("user_id") == "shopper-new")["basket_id"].n_unique() == 2
    # A service on the new version replays nothing twice: the store's events are folded in.
    from fastapi.testclient import TestClient

    from recs.config import HttpConfig
    from recs.serving.app import create_app

    client = TestClient(create_app(model, HttpConfig(warmup=False, events=str(tmp_path / "events.sqlite"))))
    served = client.app.state.holder.current.engine.retriever  # type: ignore[attr-defined]
    assert len(served.users.arrays("shopper-new").rows) == 3
    # Nothing new: a second refresh keeps the log.
    _run("refresh", "--model", str(model), "--events", str(tmp_path / "events.sqlite"), "--statistics-only")
    assert Retriever.load(model).events.height == after.events.height


def _holds(path: Path, user: str) -> bool:
    """Whether a file holds `user`: as UTF-8 or UTF-32 bytes (numpy's str arrays), or in any
    string column of a Parquet file (compressed, so its bytes say nothing)."""
    data = path.read_bytes()
    if user.encode() in data or user.encode("utf-32-le") in data:
        return True
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        return any(frame[c].cast(pl.Utf8).str.contains(user, literal=True).any() for c in frame.columns if frame[c].dtype == pl.Utf8)
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        return array.dtype.kind in "US" and bool(np.isin(array.astype(str), [user]).any())
    return False


def test_forget_then_refresh_leaves_nothing_of_the_user(model: Path, tmp_path: Path) -> None:
    engine = Engine.load(model)
    user = _heaviest_buyer(engine.retriever.events)
    assert any(_holds(p, user) for p in model.rglob("*") if p.is_file())  # the test can see them
    store_path = tmp_path / "events.sqlite"
    store = open_store(store_path)
    item = engine.retriever.catalog.item_ids[0]
    store.append([NewEvent(user, item, "purchase", float(engine.retriever.stats.now) + 60), NewEvent("other", item)])
    out = _run("forget", "--model", str(model), "--user", user, "--events", str(store_path))
    assert "forgot a user" in out and user not in out
    assert "1 from the event store" in out
    _run("refresh", "--model", str(model), "--events", str(store_path), "--statistics-only")
    holders = [p.relative_to(model) for p in model.rglob("*") if p.is_file() and _holds(p, user)]
    assert holders == []
    assert store.read()["user_id"].to_list() == ["other"] and store.forgets() == []
    audit = store.audit()
    assert [a["action"] for a in audit] == ["forget a user"] and user not in str(audit)
    served = Engine.load(model)
    assert not served.retriever.known_user(user)
    with pytest.raises(Exception, match="unknown user"):
        served.recommend(user_id=user, k=3, unknown_user="raise")


def test_forget_on_an_onnx_export_rewrites_its_log(model: Path, tmp_path: Path) -> None:
    from recs.export import export_artifact

    onnx = export_artifact(model, tmp_path / "onnx", check=False).path
    user = _heaviest_buyer(Engine.load(onnx).retriever.events)
    _run("forget", "--model", str(onnx), "--user", user)
    assert not [p for p in onnx.rglob("*") if p.is_file() and _holds(p, user)]
    assert not Engine.load(onnx).retriever.known_user(user)
