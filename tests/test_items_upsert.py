"""New, changed and discontinued items on a loaded model (torch and ONNX), without a rebuild:
`recs.retrieval.itemchanges`, `recs.serving.items`, `recs items upsert` and PUT/DELETE /items."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recs.errors import ConfigError, DataError, UnknownItemError
from recs.retrieval.candidates import NEVER_DAYS
from recs.retrieval.itemchanges import ItemChanges
from recs.serving import Engine
from recs.serving.items import changed_engine, changes_from_fields
from tests.conftest import copy_with_set_scorer

NEW_TITLE = "zanzibar marmalade ukulele"


@pytest.fixture(scope="module")
def model_dir(ranked_artifact: Path, small_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ranked artifact with a set scorer (bundles follow the catalog)."""
    return copy_with_set_scorer(ranked_artifact, tmp_path_factory.mktemp("items") / "model", small_demo_dir)


@pytest.fixture(scope="module")
def onnx_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recs.export import export_artifact

    return export_artifact(model_dir, tmp_path_factory.mktemp("items-onnx") / "export", check=False).path


@pytest.fixture(scope="module")
def engines(model_dir: Path, onnx_dir: Path) -> dict[str, Engine]:
    return {"torch": Engine.load(model_dir), "onnx": Engine.load(onnx_dir)}


def _new_item(item_id: str = "NEW-1", **fields: object) -> pl.DataFrame:
    row = {"item_id": item_id, "title": NEW_TITLE, "category": "Pantry > Spreads", "brand": "Zed", "price": "4.5",
           "in_stock": "true", **{k: str(v) for k, v in fields.items()}}
    return pl.DataFrame({k: [v] for k, v in row.items()})


def _changes(frame: pl.DataFrame | None = None, remove: tuple[str, ...] = ()) -> ItemChanges:
    return ItemChanges.from_raw(frame, "items.csv", remove)


def _ids(results: list) -> list[str]:
    return [r.item_id for r in results]


def _buyer_and_favourite(engine: Engine) -> tuple[str, str]:
    """A user with purchases and the item they bought most (a buy-again candidate)."""
    buys = engine.retriever.events.filter(pl.col("event") == "purchase")
    top = buys.group_by("user_id", "item_id").len().sort(["len", "user_id", "item_id"], descending=[True, False, False])
    return str(top["user_id"][0]), str(top["item_id"][0])


def _check_aligned(engine: Engine) -> None:
    parts = engine._parts  # one consistent model, as a request reads it
    r, bundler = parts.retriever, parts.bundler
    n = len(r.catalog)
    assert r.items.height == n == len(r.item_vectors) == len(r.masks) == len(r.categories)
    assert r.items["item_id"].to_list() == r.catalog.item_ids == list(r.catalog.row_of)
    s = r.stats
    assert len(s.popularity) == len(s.rebuy_rate) == len(s.neighbour_rows) == len(s.neighbour_scores) == len(s.popular_rows) == n
    assert s.neighbour_rows.max() < n
    for row in s.neighbour_rows:  # -1 only as padding at the end
        gaps = np.flatnonzero(row < 0)
        assert not len(gaps) or (row[gaps[0]:] < 0).all()
    if s.factors is not None:
        assert len(s.factors.item_factors) == n
    if s.tifu is not None:
        assert s.tifu.vectors.shape[1] == n
    assert all(len(c) == n for c in r.category_codes)
    assert sorted(r.index.item_ids) == sorted(r.catalog.item_ids)
    if bundler is not None:
        assert bundler.retriever is r
        assert bundler.scorer.n_items == len(bundler.table) == n
        assert bundler.scorer.cooc.n_items == n
        assert bundler.item_model is not None  # carried over the catalog change


# -- the per-item arrays --------------------------------------------------------------------------


def test_row_map_carries_every_kind_of_per_item_array() -> None:
    import scipy.sparse as sp

    from recs.retrieval.factors import FactorIndex, UserItemFactors
    from recs.retrieval.rowmap import RowMap
    from recs.retrieval.statistics import BehaviourStats
    from recs.retrieval.tifu import TifuConfig, TifuModel

    rows = RowMap.of(np.array([0, 2, 3]), n_old=4, n_added=2)  # row 1 removed, two new items
    assert rows.source.tolist() == [0, 2, 3, -1, -1] and rows.removes and not rows.is_identity
    assert rows.new_of_old.tolist() == [0, -1, 1, 2]
    assert rows.rows(np.array([[1, 3, -1], [2, 0, 1]])).tolist() == [[-1, 2, -1], [1, 0, -1]]
    assert rows.take(np.array([1.0, 2.0, 3.0, 4.0])).tolist() == [1.0, 3.0, 4.0, 0.0, 0.0]
    tifu = TifuModel(np.array(["a", "b"]), sp.csr_matrix(np.array([[1, 2, 0, 3], [0, 4, 5, 0]], np.float32)), TifuConfig())
    factors = UserItemFactors(np.array(["a", "b"]), np.ones((2, 2), np.float32), np.arange(8, dtype=np.float32).reshape(4, 2))
    stats = BehaviourStats(
        now=5.0, popularity=np.array([4.0, 3.0, 2.0, 1.0]), rebuy_rate=np.array([0.1, 0.2, 0.3, 0.4], np.float32),
        neighbour_rows=np.array([[1, 2, -1], [0, -1, -1], [1, 3, 0], [2, -1, -1]], np.int32),
        neighbour_scores=np.array([[0.9, 0.5, 0], [0.8, 0, 0], [0.7, 0.6, 0.5], [0.4, 0, 0]], np.float32),
        factors=factors, tifu=tifu, trending=np.array([0.5, 0.4, 0.3, 0.2]), first_sold=np.array([1.0, 2.0, np.inf, 4.0]),
    )
    stats.forget_user("b")
    out = stats.rebased(rows)
    assert out.popularity.tolist() == [4.0, 2.0, 1.0, 0.0, 0.0] and out.now == 5.0
    assert out.trending is not None and out.trending.tolist() == [0.5, 0.3, 0.2, 0.0, 0.0]
    assert out.first_sold is not None and out.first_sold.tolist() == [1.0, np.inf, 4.0, np.inf, np.inf]  # new: never sold
    assert out.days_since_first_sold(np.arange(5)).tolist() == [4.0 / 86400, NEVER_DAYS, 1.0 / 86400, NEVER_DAYS, NEVER_DAYS]
    # Saved and read back; an artifact from before the trending statistic reads zeros.
    files = stats.arrays()
    meta = json.dumps(stats.meta())
    for kept in (files, {k: v for k, v in files.items() if k not in ("trending.npy", "first_sold.npy")}):
        names = {*kept, "statistics.json"}
        back = BehaviourStats.from_files(kept.__getitem__, lambda _name: meta, names.__contains__)
        want = stats.trending if "trending.npy" in kept else np.zeros(4)
        assert back.trending is not None and back.trending.tolist() == want.tolist()
        assert back.first_sold is not None and np.array_equal(back.first_sold, stats.first_sold if "first_sold.npy" in kept else np.full(4, np.inf))
    assert out.popular_rows.tolist()[:3] == [0, 1, 2]
    # Removed neighbour 1 leaves each list, which closes up; new items have none.
    assert out.neighbour_rows.tolist() == [[1, -1, -1], [2, 0, -1], [1, -1, -1], [-1, -1, -1], [-1, -1, -1]]
    assert out.neighbour_scores[1].tolist() == pytest.approx([0.6, 0.5, 0.0])
    assert out.factors is not None and out.factors.item_factors.tolist() == [[0, 1], [4, 5], [6, 7], [0, 0], [0, 0]]
    assert out.factors.row_scores("b") is None  # forgotten users stay forgotten
    assert out.tifu is not None and out.tifu.vectors.toarray()[0].tolist() == [1, 0, 3, 0, 0]
    # The large-catalog ALS index follows: extended when items were only added, rebuilt otherwise.
    big = np.random.default_rng(0).normal(size=(2000, 4)).astype(np.float32)
    indexed = UserItemFactors(np.array(["a"]), np.ones((1, 4), np.float32), big, item_index=FactorIndex.build(big))
    for mapping in (RowMap.of(np.arange(2000), 2000, 3), RowMap.of(np.arange(1, 2000), 2000, 3)):
        moved = indexed.rebased(mapping)
        assert moved.item_index is not None and moved.item_index.ntotal == len(mapping)
        best = moved.row_scores("a").top(10)  # type: ignore[union-attr]
        assert best.max() < len(mapping) and len(best) == 10


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_index_copy_is_independent(kind: str) -> None:
    from recs.retrieval.index import ItemIndex

    vectors = np.random.default_rng(1).normal(size=(1200, 16)).astype(np.float32)
    ids = [f"I{i}" for i in range(1200)]
    index = ItemIndex(16, kind)
    index.add(ids, vectors, categories=["a"] * 1200)
    copy = index.copy()
    copy.remove(["I0"])
    copy.update(["I1"], vectors[2:3])
    copy.add(["NEW"], vectors[5:6])
    copy.set_metadata(["I3"], in_stock=[False])
    assert "I0" in index and "NEW" not in index and len(index) == 1200 and index.in_stock(["I3"])[0]
    assert index.search(vectors[:1], 1)[0][0][0] == "I0"
    assert "I0" not in copy.search(vectors[:1], 5)[0][0]
    assert "NEW" in copy.search(vectors[5:6], 2)[0][0]
    assert copy.search(vectors[3:4], 3, in_stock_only=True)[0][0][0] != "I3"


# -- in memory -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_new_item_is_recommendable_at_once_and_filters_apply(engines: dict[str, Engine], backend: str) -> None:
    old = engines[backend]
    n = len(old.retriever.catalog)
    new, summary = changed_engine(old, _changes(_new_item()))
    assert (summary.added, summary.updated, summary.reencoded, summary.removed) == (["NEW-1"], [], ["NEW-1"], [])
    _check_aligned(new)
    assert len(old.retriever.catalog) == n and "NEW-1" not in old.retriever.catalog.row_of  # the old model is untouched
    assert "NEW-1" not in old.retriever.index
    found = _ids(new.recommend(text=NEW_TITLE, k=5, rerank=False))
    assert "NEW-1" in found
    assert "NEW-1" not in _ids(new.recommend(text=NEW_TITLE, k=5, price_max=4.0, rerank=False))
    assert "NEW-1" in _ids(new.recommend(text=NEW_TITLE, k=5, category="pantry", rerank=False))
    assert new.retriever.items.row(new.retriever.catalog.row_of["NEW-1"], named=True)["price"] == 4.5
    user, _ = _buyer_and_favourite(new)
    assert new.recommend(user_id=user, k=10)  # known users still served, ranker and all
    if new.bundler is not None:
        new.bundle(item="NEW-1", n=1)  # a new item need not be bundle-able, but nothing breaks
        new.bundle(user_id=user, n=1)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_removed_item_leaves_every_source(engines: dict[str, Engine], backend: str) -> None:
    old = engines[backend]
    user, favourite = _buyer_and_favourite(old)
    assert favourite in _ids(old.recommend(user_id=user, k=50, rerank=False))  # buy-again finds it before
    new, summary = changed_engine(old, _changes(remove=(favourite,)))
    assert summary.removed == [favourite]
    _check_aligned(new)
    r = new.retriever
    assert favourite not in r.catalog.row_of and favourite not in r.index
    assert favourite not in r.events["item_id"].to_list()
    assert favourite in old.retriever.catalog.row_of  # requests in flight on the old model are unaffected
    for kwargs in ({"user_id": user}, {"text": old.retriever.catalog.titles[old.retriever.catalog.row_of[favourite]]}, {}):
        assert favourite not in _ids(new.recommend(k=len(r.catalog), rerank=False, unknown_user="fallback", **kwargs))
    assert favourite not in _ids(new.recommend(user_id=user, k=20, novelty=True, rerank=False))
    if new.bundler is not None:
        for bundle in new.bundle(user_id=user, n=3, in_stock=False):
            assert favourite not in bundle.item_ids
    with pytest.raises(UnknownItemError):
        new.recommend(history=[favourite], k=5)
    assert new.retriever.add_events(user, [(favourite, "purchase", 2e9)]) == 0


def test_changes_in_place_and_reencoding(engines: dict[str, Engine]) -> None:
    old = engines["torch"]
    r = old.retriever
    item = r.catalog.item_ids[3]
    row = r.items.row(3, named=True)
    price = pl.DataFrame({"item_id": [item], "title": [row["title"]], "price": ["999.5"], "in_stock": ["false"]})
    new, summary = changed_engine(old, _changes(price))
    assert (summary.updated, summary.reencoded) == ([item], [])  # price and stock: no re-encoding
    nr = new.retriever
    _check_aligned(new)
    assert np.array_equal(nr.item_vectors[3], r.item_vectors[3])
    changed = nr.items.row(3, named=True)
    assert (changed["price"], changed["in_stock"], changed["title"], changed["category"]) == (999.5, False, row["title"], row["category"])
    assert r.items.row(3, named=True)["price"] == row["price"]  # the old frame is untouched
    assert item not in _ids(new.recommend(text=row["title"], k=len(nr.catalog), price_max=500.0, rerank=False))
    assert item not in _ids(new.recommend(text=row["title"], k=len(nr.catalog), in_stock=True, rerank=False))
    assert "price 999.50" in nr.catalog.texts[3]  # the text the cross-encoder reads follows
    retitled = pl.DataFrame({"item_id": [item], "title": [NEW_TITLE]})
    new2, summary2 = changed_engine(new, _changes(retitled))
    assert summary2.reencoded == [item]
    assert not np.allclose(new2.retriever.item_vectors[3], r.item_vectors[3])
    assert new2.retriever.catalog.titles[3] == NEW_TITLE and new2.retriever.items.row(3, named=True)["price"] == 999.5
    assert np.allclose(new2.retriever.index.vectors([item])[0], new2.retriever.item_vectors[3] / np.linalg.norm(new2.retriever.item_vectors[3]), atol=1e-5)


def test_bad_rows_are_refused_with_row_and_column(engines: dict[str, Engine]) -> None:
    engine = engines["torch"]
    with pytest.raises(DataError, match=r"items\.csv.*row 1.*price"):
        changed_engine(engine, _changes(_new_item(price="cheap")))
    with pytest.raises(DataError, match=r"row 2.*title"):
        changed_engine(engine, _changes(pl.concat([_new_item(), _new_item("NEW-2", title="")])))
    with pytest.raises(UnknownItemError, match="NOPE"):
        changed_engine(engine, _changes(remove=("NOPE",)))
    first = engine.retriever.catalog.item_ids[0]
    with pytest.raises(ConfigError, match="both"):
        changed_engine(engine, _changes(_new_item(first), remove=(first,)))
    with pytest.raises(DataError, match="price"):
        changes_from_fields("X", {"title": "t", "price": "-"})


def test_requests_during_changes_never_fail(model_dir: Path) -> None:
    """Requests on threads while items are added, changed and removed, and events arrive: none
    fails, none sees a half-applied change, no event is lost."""
    from recs.serving.items import apply_changes

    engine = Engine.load(model_dir)
    user, _ = _buyer_and_favourite(engine)
    category = engine.retriever.categories[0].split(">")[0].strip()
    first = engine.retriever.catalog.item_ids[0]
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                _check_aligned(engine)
                engine.recommend(user_id=user, k=10, rerank=False)
                engine.recommend(text=NEW_TITLE, k=5, category=category, price_max=100.0, rerank=False)
                engine.bundle(user_id=user, n=1)
            except BaseException as err:  # any failure fails the test
                errors.append(err)
                return

    def send() -> None:
        for n in range(40):
            engine.retriever.add_events("EVENTS-USER", [(first, "view", 1e9 + n)])

    threads = [threading.Thread(target=ask) for _ in range(3)] + [threading.Thread(target=send)]
    for t in threads:
        t.start()
    changed = engine.retriever.catalog.item_ids[10:14]
    for step in range(4):
        apply_changes(engine, _changes(pl.concat([_new_item(f"NEW-{step}"), _new_item(changed[step], price="1.5")])))
        apply_changes(engine, changes_from_fields(f"NEW-{step}", None))
    threads[-1].join()
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    final = engine.retriever
    assert not any(f"NEW-{s}" in final.catalog.row_of for s in range(4))
    assert final.catalog.titles[final.catalog.row_of[changed[0]]] == NEW_TITLE
    assert len(final.users.arrays("EVENTS-USER").rows) == 40  # forwarded to each new model in turn


# -- recs items upsert -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_cli_upsert_writes_a_new_version(model_dir: Path, onnx_dir: Path, tmp_path: Path, backend: str) -> None:
    from typer.testing import CliRunner

    from recs.artifacts import open_artifact
    from recs.cli import app

    target = Path(shutil.copytree(model_dir if backend == "torch" else onnx_dir, tmp_path / "model"))
    before = open_artifact(target)
    engine = Engine.load(target)
    user, favourite = _buyer_and_favourite(engine)
    changed = engine.retriever.catalog.item_ids[5]
    title = engine.retriever.catalog.titles[5]
    file = tmp_path / "new_items.csv"
    pl.DataFrame({"item_id": ["NEW-1", changed], "title": [NEW_TITLE, title], "category": ["Pantry > Spreads", None],
                  "price": [4.5, 77.25], "in_stock": [True, False]}).write_csv(file)
    result = CliRunner().invoke(app, ["items", "upsert", "--model", str(target), str(file), "--remove", f"{favourite}"])
    assert result.exit_code == 0, result.output
    assert "1 added, 1 updated, 2 re-encoded, 1 removed" in result.output  # the category left the text: re-encoded
    after = open_artifact(target)  # verifies every checksum
    assert after.created != before.created
    for name in ("towers", "onnx", "ranker", "set_scorer"):
        if before.has_component(name):
            assert after.component(name).files == before.component(name).files
    loaded = Engine.load(target)
    _check_aligned(loaded)
    assert "NEW-1" in _ids(loaded.recommend(text=NEW_TITLE, k=5, rerank=False))
    assert loaded.retriever.items.row(loaded.retriever.catalog.row_of[changed], named=True)["price"] == 77.25
    assert favourite not in loaded.retriever.catalog.row_of and favourite not in loaded.retriever.index
    assert favourite not in _ids(loaded.recommend(user_id=user, k=len(loaded.retriever.catalog), rerank=False))
    # Only a price change: the interactions are kept as they were.
    price_only = tmp_path / "price.jsonl"
    price_only.write_text(f'{{"item_id": "NEW-1", "title": "{NEW_TITLE}", "category": "Pantry > Spreads", "price": 5}}\n', encoding="utf-8")
    interactions = open_artifact(target).component("interactions").files
    result = CliRunner().invoke(app, ["items", "upsert", "--model", str(target), str(price_only)])
    assert result.exit_code == 0, result.output
    assert "0 added, 1 updated, 0 re-encoded, 0 removed" in result.output
    assert open_artifact(target).component("interactions").files == interactions


def test_cli_upsert_refuses_bad_input(model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recs.cli import app

    target = Path(shutil.copytree(model_dir, tmp_path / "model"))
    manifest = (target / "manifest.json").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,title,price\nNEW-1,ok,1\nNEW-2,fine,cheap\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["items", "upsert", "--model", str(target), str(bad)])
    assert result.exit_code == 2 and "bad.csv" in result.output and "row 2" in result.output and "price" in result.output
    result = runner.invoke(app, ["items", "upsert", "--model", str(target), "--remove", "NOPE"])
    assert result.exit_code == 3 and "NOPE" in result.output
    result = runner.invoke(app, ["items", "upsert", "--model", str(target)])
    assert result.exit_code == 2
    assert (target / "manifest.json").read_text() == manifest  # nothing written


# -- PUT / DELETE /items ---------------------------------------------------------------------------

TOKEN = "items-token-42"


@pytest.fixture()
def store(tmp_path: Path):
    from recs.serving.eventstore import open_store

    opened = open_store(tmp_path / "model.events.sqlite")
    yield opened
    opened.close()


def _app(onnx_dir: Path, store: object | None):
    from fastapi.testclient import TestClient

    from recs.config import HttpConfig
    from recs.serving.app import create_app

    app = create_app(Engine.load(onnx_dir), HttpConfig(admin_token_env="RECS_ADMIN_TOKEN", events="off"), store=store)  # type: ignore[arg-type]
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture()
def client(onnx_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The service over the ONNX export without an event store: changes are applied in memory."""
    monkeypatch.setenv("RECS_ADMIN_TOKEN", TOKEN)
    return _app(onnx_dir, None)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _recommended(client, **body: object) -> list[str]:
    response = client.post("/recommend", json={"k": 5, "rerank": False, **body})
    assert response.status_code == 200, response.text
    return [i["item_id"] for i in response.json()["items"]]


@pytest.mark.parametrize("with_store", [False, True])
def test_put_and_delete_items(onnx_dir: Path, store, monkeypatch: pytest.MonkeyPatch, with_store: bool) -> None:
    monkeypatch.setenv("RECS_ADMIN_TOKEN", TOKEN)
    client = _app(onnx_dir, store if with_store else None)
    item = {"title": NEW_TITLE, "category": "Pantry > Spreads", "brand": "Zed", "price": 4.5, "colour": "amber", "organic": True}
    response = client.put("/items/NEW/1", json=item, headers=_auth())  # an id may hold a slash
    assert response.status_code == 200, response.text
    assert response.json() == {"item_id": "NEW/1", "action": "added", "reencoded": True}
    assert "NEW/1" in _recommended(client, text=NEW_TITLE)
    got = client.get("/items/NEW/1").json()
    assert (got["title"], got["price"], got["colour"], got["organic"], got["in_stock"]) == (NEW_TITLE, 4.5, "amber", "True", True)
    response = client.put("/items/NEW/1", json={**item, "price": 12.0}, headers=_auth())
    assert response.json() == {"item_id": "NEW/1", "action": "updated", "reencoded": False}
    assert "NEW/1" not in _recommended(client, text=NEW_TITLE, price_max=10.0)
    assert "NEW/1" in _recommended(client, text=NEW_TITLE, price_min=10.0)
    response = client.put("/items/NEW/1", json={"title": "plain kettle", "price": 12.0}, headers=_auth())
    assert response.json() == {"item_id": "NEW/1", "action": "updated", "reencoded": True}
    got = client.get("/items/NEW/1").json()  # PUT is the whole item: what it leaves out is emptied
    assert (got["title"], got["colour"], got["category"], got["price"]) == ("plain kettle", None, None, 12.0)
    response = client.delete("/items/NEW/1", headers=_auth())
    assert response.json() == {"item_id": "NEW/1", "action": "removed", "reencoded": False}
    assert "NEW/1" not in _recommended(client, text=NEW_TITLE, k=50)
    assert client.get("/items/NEW/1").status_code == 404
    assert client.delete("/items/NEW/1", headers=_auth()).status_code == 404
    if with_store:  # recorded before the answer; a refused change is not
        recorded = store.item_changes()
        assert [(i, f is None) for _, i, f in recorded] == [("NEW/1", False)] * 3 + [("NEW/1", True)]
        assert {k: v for k, v in recorded[0][2].items() if v is not None} == item


def test_item_changes_reach_every_worker_through_the_store(onnx_dir: Path, store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two services on one store (two workers): a change taken by one is served by the other
    on its next request, and a service started later replays it at load."""
    monkeypatch.setenv("RECS_ADMIN_TOKEN", TOKEN)
    first, second = _app(onnx_dir, store), _app(onnx_dir, store)
    gone = second.app.state.holder.current.engine.retriever.catalog.item_ids[7]
    item = {"title": NEW_TITLE, "category": "Pantry > Spreads", "price": 4.5}
    assert first.put("/items/NEW-9", json=item, headers=_auth()).status_code == 200
    assert first.delete(f"/items/{gone}", headers=_auth()).status_code == 200
    for client in (second, _app(onnx_dir, store)):
        assert "NEW-9" in _recommended(client, text=NEW_TITLE)
        assert client.get(f"/items/{gone}").status_code == 404
        assert gone not in _recommended(client, text=NEW_TITLE, k=100)
    assert second.put("/items/NEW-9", json={**item, "price": 40.0}, headers=_auth()).status_code == 200
    assert first.get("/items/NEW-9").json()["price"] == 40.0


def test_store_item_changes_fold_into_the_artifact(model_dir: Path, store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`recs items upsert --events` and `recs refresh` write what the store recorded into the
    artifact and move its mark: a service then has nothing left to replay."""
    from typer.testing import CliRunner

    from recs.artifacts import open_artifact
    from recs.cli import app

    target = Path(shutil.copytree(model_dir, tmp_path / "model"))
    gone = Engine.load(target).retriever.catalog.item_ids[7]
    store.put_item("NEW-9", {"title": NEW_TITLE, "category": "Pantry > Spreads", "price": 4.5})
    store.put_item("NEW-8", {"title": "temporary", "price": 1})
    store.put_item("NEW-8", None)
    last = store.put_item(gone, None)
    runner = CliRunner()
    result = runner.invoke(app, ["items", "upsert", "--model", str(target), "--events", str(tmp_path / "model.events.sqlite")])
    assert result.exit_code == 0, result.output
    assert "1 added, 0 updated, 1 re-encoded, 1 removed" in result.output
    assert open_artifact(target).component("interactions").config["store"]["items"] == last
    loaded = Engine.load(target)
    assert "NEW-9" in loaded.retriever.catalog.row_of and gone not in loaded.retriever.catalog.row_of
    result = runner.invoke(app, ["items", "upsert", "--model", str(target), "--events", str(tmp_path / "model.events.sqlite")])
    assert "0 added, 0 updated, 0 re-encoded, 0 removed" in result.output
    store.put_item("NEW-9", {"title": NEW_TITLE, "category": "Pantry > Spreads", "price": 9.5})
    last = store.put_item("NEW-7", {"title": "seven", "price": 7})
    result = runner.invoke(app, ["refresh", "--model", str(target), "--events", str(tmp_path / "model.events.sqlite"), "--statistics-only"])
    assert result.exit_code == 0, result.output
    refreshed = Engine.load(target)
    _check_aligned(refreshed)
    r = refreshed.retriever
    assert r.store_marks["items"] == last and "NEW-7" in r.catalog.row_of
    assert r.items.row(r.catalog.row_of["NEW-9"], named=True)["price"] == 9.5


def test_item_routes_need_the_token_and_a_good_body(client, monkeypatch: pytest.MonkeyPatch) -> None:
    item = {"title": NEW_TITLE, "price": 1.0}
    assert client.put("/items/X", json=item).status_code == 401
    assert client.delete("/items/X", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for bad in ({}, {"title": ""}, {"title": "   "}, {"title": "t", "price": -1}, {"title": "t", "price": "cheap"},
                {"title": "t", "in_stock": "perhaps"}, {"title": "t", "tags": ["a"]}, {"title": "t", "item_id": "Y"},
                {"title": "t", "meta": {"a": 1}}):
        response = client.put("/items/X", json=bad, headers=_auth())
        assert response.status_code == 422, (bad, response.text)
        assert "Traceback" not in response.text and response.json()["error"]
    assert "X" not in client.app.state.holder.current.engine.retriever.catalog.row_of
    monkeypatch.delenv("RECS_ADMIN_TOKEN")
    assert client.put("/items/X", json=item, headers=_auth()).status_code == 403
    assert client.delete("/items/X", headers=_auth()).status_code == 403
