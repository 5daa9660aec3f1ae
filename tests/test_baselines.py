"""The Recommender contract, run against every baseline (like implicit's shared model tests),
plus what each baseline must do specifically."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recs.data.baskets import assign_baskets
from recs.data.schema import EVENTS_SCHEMA, ITEMS_SCHEMA
from recs.errors import ArtifactError, ConfigError, DataError, NotFittedError, UnknownUserError
from recs.evaluation.baselines import BASELINES, make_baseline
from recs.evaluation.recommender import Recommender, top_k

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CATALOG = ["a", "b", "c", "d", "e", "f"]
# Purchase counts: a 5, b 3, c 1, e 1, f 1, d 0 -> ties by item id.
POPULAR = ["a", "b", "c", "e", "f", "d"]
# Small but exercised parameters: the contract, not the quality, is under test.
FAST_PARAMS: dict[str, dict[str, object]] = {
    "als": {"factors": 8, "iterations": 5, "num_threads": 1}
}


def _event(
    user: str, item: str, day: float, kind: str = "purchase", order: str | None = None
) -> dict[str, object]:
    return {
        "user_id": user,
        "item_id": item,
        "timestamp": T0 + timedelta(days=day),
        "event": kind,
        "order_id": order,
        "quantity": 1.0,
        "rating": None,
    }


def make_events() -> pl.DataFrame:
    rows = [
        _event("u1", "a", 0, order="o1"),
        _event("u1", "b", 0, order="o1"),
        _event("u1", "a", 2, order="o2"),
        _event("u1", "c", 3, "view"),
        _event("u1", "d", 3, "cart"),
        _event("u2", "a", 1, order="o3"),
        _event("u2", "b", 1, order="o3"),
        _event("u2", "c", 4, order="o4"),
        _event("u3", "a", 5, order="o5"),
        _event("u3", "b", 5, order="o5"),
        _event("u4", "a", 6, order="o6"),
        _event("u5", "e", 7, "view"),
        _event("u6", "f", 1, order="o7"),
        _event("u6", "e", 8, order="o8"),
        # An item missing from the catalog must never come back.
        _event("u2", "gone", 4, order="o4"),
    ]
    schema = {k: v for k, v in EVENTS_SCHEMA.items() if k != "basket_id"}
    return assign_baskets(pl.DataFrame(rows, schema=schema))


def make_items() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": CATALOG,
            "title": [
                "Red apple",
                "Apple pie",
                "Banana bread",
                "Kitchen knife",
                "Green tea",
                "Jasmine green tea",
            ],
            "description": [
                "crisp fruit",
                "baked pie",
                "sweet loaf",
                "steel blade",
                "loose leaf",
                "tea bags",
            ],
            "category": [
                "Food > Fruit",
                "Food > Bakery",
                "Food > Bakery",
                "Home > Kitchen",
                "Drinks > Tea",
                "Drinks > Tea",
            ],
            "brand": ["Orchard", "Baker", "Baker", "Blades", "Leafy", "Leafy"],
            "price": [1.0, 4.0, 3.0, 20.0, 5.0, 6.0],
        },
        schema={
            k: ITEMS_SCHEMA[k]
            for k in ("item_id", "title", "description", "category", "brand", "price")
        },
    )


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return make_events()


@pytest.fixture(scope="module")
def items() -> pl.DataFrame:
    return make_items()


def build(name: str, **params: object) -> Recommender:
    return make_baseline(name, **{**FAST_PARAMS.get(name, {}), **params})


@pytest.fixture(scope="module", params=sorted(BASELINES))
def fitted(
    request: pytest.FixtureRequest, events: pl.DataFrame, items: pl.DataFrame
) -> Recommender:
    return build(request.param).fit(events, items)


KNOWN = ["u1", "u2", "u3", "u4", "u5", "u6"]


def _check_lists(recs, k: int, exclude: dict[str, set[str]] | None = None) -> None:
    for user, item_list, scores in zip(recs.user_ids, recs.item_ids, recs.scores, strict=True):
        assert len(item_list) == len(scores) <= k
        assert len(set(item_list)) == len(item_list), "duplicates"
        assert set(item_list) <= set(CATALOG), "non-catalog item"
        assert scores.dtype == np.float32
        assert np.isfinite(scores).all()
        assert (np.diff(scores) <= 0).all(), f"scores not descending for {user}: {scores}"
        if exclude:
            assert not set(item_list) & exclude.get(user, set())


# ---------------------------------------------------------------------------------------------
# Contract


def test_registry_and_names() -> None:
    assert set(BASELINES) == {"popularity", "repeat", "cooc", "als", "bm25", "tifu_knn", "upcf"}
    for name, cls in BASELINES.items():
        assert cls.name == name
        assert issubclass(cls, Recommender)


def test_fit_returns_self(events: pl.DataFrame, items: pl.DataFrame) -> None:
    for name in BASELINES:
        model = build(name)
        assert model.fit(events, items) is model
        assert model.fitted


def test_known_users_full_lists(fitted: Recommender) -> None:
    recs = fitted.recommend(KNOWN, k=4)
    assert recs.user_ids == KNOWN
    assert all(len(items) == 4 for items in recs.item_ids)
    _check_lists(recs, 4)


def test_k_larger_than_catalog(fitted: Recommender) -> None:
    recs = fitted.recommend(["u1", "nobody"], k=100)
    _check_lists(recs, 100)
    assert [sorted(items) for items in recs.item_ids] == [sorted(CATALOG)] * 2


def test_exclude_bought(fitted: Recommender) -> None:
    bought = {"u1": {"a", "b"}, "u2": {"a", "b", "c"}, "u6": {"e", "f"}}
    recs = fitted.recommend(list(bought), k=100, exclude_bought=True)
    _check_lists(recs, 100, exclude=bought)
    for user, item_list in zip(recs.user_ids, recs.item_ids, strict=True):
        assert set(item_list) == set(CATALOG) - bought[user]
    # Viewed / carted items are not "bought": still allowed.
    assert {"c", "d"} <= set(fitted.recommend(["u1"], k=100, exclude_bought=True).item_ids[0])


def test_unknown_user_fallback_is_popularity(fitted: Recommender) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recs = fitted.recommend(["nobody", "u1", ""], k=6)
    assert recs.item_ids[0] == POPULAR
    assert recs.item_ids[2] == POPULAR
    np.testing.assert_array_equal(recs.scores[0], np.array([5, 3, 1, 1, 1, 0], dtype=np.float32))
    _check_lists(recs, 6)


def test_unknown_user_raise(events: pl.DataFrame, items: pl.DataFrame) -> None:
    for name in BASELINES:
        model = build(name, unknown_user="raise").fit(events, items)
        with pytest.raises(UnknownUserError, match="nobody"):
            model.recommend(["u1", "nobody"], k=3)
        assert len(model.recommend(["u1"], k=3).item_ids[0]) == 3


def test_unknown_user_warn(events: pl.DataFrame, items: pl.DataFrame) -> None:
    for name in BASELINES:
        model = build(name, unknown_user="warn").fit(events, items)
        with pytest.warns(UserWarning, match="unknown user"):
            recs = model.recommend(["nobody", "u1"], k=3)
        assert recs.item_ids[0] == POPULAR[:3]
        assert len(recs.item_ids[1]) == 3


def test_empty_request(fitted: Recommender) -> None:
    recs = fitted.recommend([], k=5)
    assert recs.user_ids == [] and recs.item_ids == [] and recs.scores == []
    assert fitted.recommend(["u1"], k=5).to_frame().height == 5


def test_bad_arguments(fitted: Recommender) -> None:
    for k in (0, -1, 2.5, True):
        with pytest.raises(ConfigError):
            fitted.recommend(["u1"], k=k)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        fitted.recommend("u1", k=3)


def test_not_fitted(tmp_path: Path) -> None:
    for name in BASELINES:
        model = build(name)
        with pytest.raises(NotFittedError):
            model.recommend(["u1"])
        with pytest.raises(NotFittedError):
            model.save(tmp_path / name)


def test_bad_policy_and_names() -> None:
    with pytest.raises(ConfigError):
        make_baseline("popularity", unknown_user="ignore")
    with pytest.raises(ConfigError, match="unknown baseline"):
        make_baseline("sasrec")
    with pytest.raises(ConfigError, match="unknown parameter"):
        make_baseline("als", factor=3)


def test_deterministic(events: pl.DataFrame, items: pl.DataFrame) -> None:
    for name in BASELINES:
        one = build(name).fit(events, items).recommend(KNOWN, k=6)
        two = build(name).fit(events, items).recommend(KNOWN, k=6)
        assert one.item_ids == two.item_ids
        for s1, s2 in zip(one.scores, two.scores, strict=True):
            np.testing.assert_array_equal(s1, s2)


def test_save_load_round_trip(fitted: Recommender, tmp_path: Path) -> None:
    users = [*KNOWN, "nobody"]
    before = fitted.recommend(users, k=6, exclude_bought=False)
    before_ex = fitted.recommend(users, k=6, exclude_bought=True)
    folder = tmp_path / fitted.name
    fitted.save(folder)
    fitted.save(folder)  # overwriting an existing save works
    assert sorted(p.name for p in tmp_path.iterdir()) == [fitted.name], "temp folders left behind"
    config = json.loads((folder / "config.json").read_text())
    assert config["class"] == fitted.name
    with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[key].dtype != object for key in npz.files)
    for loader in (Recommender.load, type(fitted).load):
        loaded = loader(folder)
        assert type(loaded) is type(fitted)
        assert loaded.get_params() == fitted.get_params()
        for want, got in (
            (before, loaded.recommend(users, k=6)),
            (before_ex, loaded.recommend(users, k=6, exclude_bought=True)),
        ):
            assert got.item_ids == want.item_ids
            for s1, s2 in zip(want.scores, got.scores, strict=True):
                np.testing.assert_array_equal(s1, s2)


def test_load_refuses_bad_artifacts(
    events: pl.DataFrame, items: pl.DataFrame, tmp_path: Path
) -> None:
    model = build("popularity").fit(events, items)
    folder = model.save(tmp_path / "pop")
    with pytest.raises(ArtifactError, match="not 'repeat'"):
        BASELINES["repeat"].load(folder)
    with pytest.raises(ArtifactError):
        Recommender.load(tmp_path / "missing")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "class": "os.system"}))
    with pytest.raises(ArtifactError, match="unknown recommender class"):
        Recommender.load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version"):
        Recommender.load(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "arrays.npz").write_bytes(b"not an npz")
    with pytest.raises(ArtifactError):
        Recommender.load(folder)


def test_bad_frames(items: pl.DataFrame, events: pl.DataFrame) -> None:
    with pytest.raises(DataError, match="user_id"):
        build("popularity").fit(events.drop("user_id"), items)
    with pytest.raises(DataError, match="duplicate"):
        build("popularity").fit(events, pl.concat([items, items.head(1)]))
    with pytest.raises(DataError, match="event kind"):
        build("popularity").fit(events.with_columns(pl.lit("like").alias("event")), items)


def test_minimal_frames_without_event_or_basket(items: pl.DataFrame) -> None:
    # Only the required columns: every row is a purchase, baskets come from session windows.
    events = pl.DataFrame(
        {"user_id": ["x", "x", "y"], "item_id": ["a", "b", "b"], "timestamp": [T0, T0, T0]}
    )
    epoch = events.with_columns(
        pl.Series("timestamp", [1_700_000_000, 1_700_000_000, 1_700_000_500])
    )
    for name in BASELINES:
        for frame in (events, epoch):
            recs = (
                build(name).fit(frame, items.select("item_id", "title")).recommend(["x", "y"], k=3)
            )
            _check_lists(recs, 3)
        assert build(name).fit(epoch, items).recommend(["x", "y"], k=3).item_ids == (
            build(name).fit(events, items).recommend(["x", "y"], k=3).item_ids
        )


def test_top_k_ties_and_removals() -> None:
    scores = np.array([[1.0, 2.0, 2.0, -np.inf, np.nan], [np.nan, np.nan, np.nan, np.nan, np.nan]])
    order = np.array([4, 3, 2, 1, 0])  # tie order: column 4 first ... column 0 last
    first, second = top_k(scores, 10, order)
    # 2.0 tie settled by `order` (2 before 1), NaN removed, -inf last.
    assert first.tolist() == [2, 1, 0, 3]
    assert second.tolist() == []
    assert top_k(scores[:1], 2, order)[0].tolist() == [2, 1]
    # Only "no opinion" left: pure tie order.
    assert top_k(np.full((1, 5), -np.inf), 3, order)[0].tolist() == [4, 3, 2]


# ---------------------------------------------------------------------------------------------
# Per-baseline behaviour


def test_popularity_order(events: pl.DataFrame, items: pl.DataFrame) -> None:
    model = build("popularity").fit(events, items)
    recs = model.recommend(["u1", "u4"], k=6)
    assert recs.item_ids == [POPULAR, POPULAR]


def test_repeat_ranks_most_bought_first(events: pl.DataFrame, items: pl.DataFrame) -> None:
    model = build("repeat").fit(events, items)
    recs = model.recommend(["u1", "u6", "u5"], k=6)
    # u1 bought a twice, b once; the rest is popularity.
    assert recs.item_ids[0] == ["a", "b", "c", "e", "f", "d"]
    # u6 bought f then e, once each: the most recent first.
    assert recs.item_ids[1][:2] == ["e", "f"]
    assert recs.item_ids[1][2:] == ["a", "b", "c", "d"]
    # u5 only viewed: nothing to buy again, popularity.
    assert recs.item_ids[2] == POPULAR
    assert recs.scores[0][0] > recs.scores[0][1] > recs.scores[0][2] == 0.0


def test_cooc_recommends_co_bought_item(events: pl.DataFrame, items: pl.DataFrame) -> None:
    model = build("cooc").fit(events, items)
    # u4 bought only a; a was bought with b in three baskets.
    assert model.recommend(["u4"], k=3).item_ids[0][0] == "b"
    assert model.recommend(["u4"], k=3, exclude_bought=True).item_ids[0][0] == "b"


def test_bm25_matches_history_text(events: pl.DataFrame, items: pl.DataFrame) -> None:
    model = build("bm25").fit(events, items)
    # u5 viewed "Green tea": both tea items share its words.
    assert set(model.recommend(["u5"], k=2).item_ids[0]) == {"e", "f"}


def test_als_learns_from_fit(events: pl.DataFrame, items: pl.DataFrame) -> None:
    model = build("als").fit(events, items)
    recs = model.recommend(["u3"], k=2)
    # u3 bought a and b: they dominate a 6-item catalog.
    assert set(recs.item_ids[0]) == {"a", "b"}


@pytest.mark.parametrize("case", ["no events", "views only", "one user", "one basket of one item"])
def test_degenerate_data(case: str, events: pl.DataFrame, items: pl.DataFrame) -> None:
    data = {
        "no events": events.clear(),
        "views only": events.with_columns(pl.lit("view").alias("event")),
        "one user": events.filter(pl.col("user_id") == "u4"),
        "one basket of one item": events.filter(pl.col("basket_id") == "o:o6"),
    }[case]
    for name in BASELINES:
        recs = build(name).fit(data, items).recommend(["u1", "u4", "nobody"], k=3)
        _check_lists(recs, 3)
        assert all(len(item_list) == 3 for item_list in recs.item_ids)


def test_one_item_catalog(events: pl.DataFrame, items: pl.DataFrame) -> None:
    for name in BASELINES:
        model = build(name).fit(events, items.filter(pl.col("item_id") == "a"))
        assert model.recommend(["u1", "nobody"], k=3).item_ids == [["a"], ["a"]]
        assert model.recommend(["u1"], k=3, exclude_bought=True).item_ids == [[]]
