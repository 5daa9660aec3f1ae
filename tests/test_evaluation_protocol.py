"""The evaluation protocol and tuning on a hand-checkable leave-last-out split.

Fixture (all purchases, catalog a..e):
  u1: o1 day0 {a, b}; o2 day1 {a}; o3 day2 {a, c}   -> test {a, c}, validation {a}
  u2: o4 day0 {b};    o5 day3 {b, e}                -> test {b, e}
  u3: o6 day1 {a}                                   -> one basket: fit only
Fit counts: a 3, b 2, c/d/e 0 -> popularity order a, b, c, d, e. Cold items: c, d, e.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from recs.data.baskets import assign_baskets
from recs.data.schema import EVENTS_SCHEMA
from recs.data.splits import Split, leave_last_out
from recs.errors import ConfigError, DataError
from recs.evaluation import Recommender, evaluate, evaluate_baselines, make_baseline, tune, tune_als
from recs.evaluation.tuning import grid_points, validation_split

T0 = datetime(2024, 1, 1, tzinfo=UTC)
LOG3 = math.log2(3)
NDCG_HIT_AT_1 = 1 / (1 + 1 / LOG3)  # 1 hit at rank 1 of 2 relevant, k = 2
NDCG_HIT_AT_2 = (1 / LOG3) / (1 + 1 / LOG3)  # 1 hit at rank 2 of 2 relevant, k = 2


def _split() -> tuple[Split, pl.DataFrame]:
    baskets = [
        ("u1", "o1", 0, "ab"),
        ("u1", "o2", 1, "a"),
        ("u1", "o3", 2, "ac"),
        ("u2", "o4", 0, "b"),
        ("u2", "o5", 3, "be"),
        ("u3", "o6", 1, "a"),
    ]
    rows = [
        {
            "user_id": user,
            "item_id": item,
            "timestamp": T0 + timedelta(days=day),
            "event": "purchase",
            "order_id": order,
            "quantity": 1.0,
            "rating": None,
        }
        for user, order, day, basket in baskets
        for item in basket
    ]
    # A view after u1's last basket: not a basket, must not leak into the targets.
    rows.append(
        {
            **rows[0],
            "item_id": "d",
            "event": "view",
            "order_id": None,
            "timestamp": T0 + timedelta(days=9),
        }
    )
    schema = {k: v for k, v in EVENTS_SCHEMA.items() if k != "basket_id"}
    events = assign_baskets(pl.DataFrame(rows, schema=schema))
    items = pl.DataFrame(
        {
            "item_id": list("abcde"),
            "title": ["apple", "bread", "cheese", "dates", "eggs"],
            "category": ["Fruit", "Bakery", "Dairy", "Fruit", None],
        }
    )
    return leave_last_out(events, items["item_id"]), items


@pytest.fixture(scope="module")
def split_items() -> tuple[Split, pl.DataFrame]:
    return _split()


def test_fixture_split(split_items: tuple[Split, pl.DataFrame]) -> None:
    split, _ = split_items
    test = {u: set(g["item_id"]) for (u,), g in split.test.group_by("user_id")}
    assert test == {"u1": {"a", "c"}, "u2": {"b", "e"}}
    assert split.cold_items == frozenset({"c", "d", "e"})
    assert set(split.valid["user_id"]) == {"u1"}


def test_popularity_numbers(split_items: tuple[Split, pl.DataFrame]) -> None:
    split, items = split_items
    model = make_baseline("popularity").fit(split.fit_events, items)
    got = evaluate(model, split, items, ks=(1, 2))
    # Everyone gets [a, b]: u1 {a, c} hits at rank 1, u2 {b, e} at rank 2.
    everyone = got["all"]
    assert everyone["users"] == 2
    assert everyone["recall@1"] == pytest.approx((1.0 + 0.0) / 2)  # 1 / min(2, 1)
    assert everyone["recall@2"] == pytest.approx(0.5)
    assert everyone["ndcg@2"] == pytest.approx((NDCG_HIT_AT_1 + NDCG_HIT_AT_2) / 2)
    assert everyone["mrr@2"] == pytest.approx((1.0 + 0.5) / 2)
    assert everyone["hit_rate@2"] == 1.0
    assert everyone["coverage@1"] == pytest.approx(1 / 5)
    assert everyone["coverage@2"] == pytest.approx(2 / 5)
    # Percentiles of counts [3, 2, 0, 0, 0]: a 0.9, b 0.7.
    assert everyone["popularity_bias@1"] == pytest.approx(0.9)
    assert everyone["popularity_bias@2"] == pytest.approx(0.8)
    assert everyone["diversity@2"] == pytest.approx(1.0)  # Fruit vs Bakery
    # New to the user: u1 {c}, u2 {e}; cold: the same two. [a, b] misses both.
    for name in ("new_to_user", "cold_items"):
        assert got[name]["users"] == 2
        assert got[name]["recall@2"] == 0.0 and got[name]["ndcg@2"] == 0.0
    assert list(got) == ["all", "new_to_user", "cold_items"]


def test_repeat_numbers(split_items: tuple[Split, pl.DataFrame]) -> None:
    split, items = split_items
    model = make_baseline("repeat").fit(split.fit_events, items)
    got = evaluate(model, split, items, ks=(2,), slices=("all",))
    # u1: [a (x2), b]; u2: [b, a] -> both hit at rank 1; re-bought items are not excluded.
    assert set(got) == {"all"}
    assert got["all"]["recall@2"] == pytest.approx(0.5)
    assert got["all"]["ndcg@2"] == pytest.approx(NDCG_HIT_AT_1)
    assert got["all"]["mrr@2"] == 1.0
    assert got["all"]["users"] == 2


def test_metric_names_and_finiteness(split_items: tuple[Split, pl.DataFrame]) -> None:
    split, items = split_items
    for name in ("popularity", "repeat", "cooc", "bm25", "als"):
        params = {"factors": 4, "iterations": 3, "num_threads": 1} if name == "als" else {}
        model = make_baseline(name, **params).fit(split.fit_events, items)
        got = evaluate(model, split, items, ks=(10, 50), batch_size=1)
        for metrics in got.values():
            for k in (10, 50):
                for m in (
                    "recall",
                    "ndcg",
                    "mrr",
                    "hit_rate",
                    "coverage",
                    "diversity",
                    "popularity_bias",
                ):
                    assert f"{m}@{k}" in metrics
            assert all(math.isfinite(v) for v in metrics.values())
        # 10 slots over a 5-item catalog: every list holds every item.
        assert got["all"]["hit_rate@10"] == 1.0
        assert got["all"]["coverage@10"] == 1.0


def test_empty_slice_and_test(split_items: tuple[Split, pl.DataFrame]) -> None:
    split, items = split_items
    model = make_baseline("popularity").fit(split.fit_events, items)
    no_cold = Split(
        fit_events=split.fit_events,
        tune_events=split.tune_events,
        test=split.test,
        valid=split.valid,
        cold_items=frozenset(),
        protocol="x",
    )
    got = evaluate(model, no_cold, items, ks=(2,), slices=("cold_items",))
    assert got["cold_items"]["users"] == 0
    assert got["cold_items"]["recall@2"] == 0.0
    empty = Split(
        split.fit_events, split.tune_events, split.test.clear(), split.valid, frozenset(), "x"
    )
    assert evaluate(model, empty, items, ks=(2,))["all"]["users"] == 0


def test_bad_arguments(split_items: tuple[Split, pl.DataFrame]) -> None:
    split, items = split_items
    model = make_baseline("popularity").fit(split.fit_events, items)
    with pytest.raises(ConfigError):
        evaluate(model, split, items, ks=())
    with pytest.raises(ConfigError):
        evaluate(model, split, items, ks=(0,))
    with pytest.raises(ConfigError, match="slice"):
        evaluate(model, split, items, slices=("warm",))
    with pytest.raises(ConfigError):
        evaluate(model, split, items, batch_size=0)


def test_evaluate_baselines_rows(split_items: tuple[Split, pl.DataFrame]) -> None:
    split, items = split_items
    rows = evaluate_baselines(
        ["popularity", "repeat", "als"],
        items,
        split,
        ks=(2,),
        tune=True,
        dataset="fixture",
        params={"als": {"num_threads": 1}},
    )
    assert [(r["method"], r["slice"]) for r in rows] == [
        (m, s)
        for m in ("popularity", "repeat", "als")
        for s in ("all", "new_to_user", "cold_items")
    ]
    assert all(set(r) == {"dataset", "method", "slice", "metrics", "notes"} for r in rows)
    assert rows[0]["dataset"] == "fixture"
    assert rows[3]["metrics"]["ndcg@2"] == pytest.approx(NDCG_HIT_AT_1)
    als_notes = rows[-1]["notes"]
    assert "tuned on validation" in als_notes and "factors=" in als_notes
    untuned = evaluate_baselines(
        ["als"], items, split, ks=(2,), tune=False, params={"als": {"factors": 3}}
    )
    assert "tuned" not in untuned[0]["notes"] and "factors=3" in untuned[0]["notes"]


def test_discover_rows_exclude_bought_items(split_items: tuple[Split, pl.DataFrame]) -> None:
    split, items = split_items
    model = make_baseline("repeat").fit(split.fit_events, items)
    # u1 bought a, b: their discover list starts with the most popular item they never bought.
    ranked = model.recommend(["u1"], k=3, exclude_bought=True).item_ids[0]
    assert "a" not in ranked and "b" not in ranked
    plain = evaluate(model, split, items, ks=(2,), slices=("new_to_user",))
    shelf = evaluate(model, split, items, ks=(2,), slices=("new_to_user",), exclude_bought=True)
    assert shelf["new_to_user"]["users"] == plain["new_to_user"]["users"]
    rows = evaluate_baselines(["repeat"], items, split, ks=(2,), tune=False, discover=True)
    assert [r["slice"] for r in rows] == ["all", "new_to_user", "cold_items", "discover"]
    assert rows[-1]["metrics"] == shelf["new_to_user"]


def test_tuning(split_items: tuple[Split, pl.DataFrame]) -> None:
    split, items = split_items
    result = tune("cooc", split, items, {"shrink": [0.0, 10.0], "half_life": [2.0]})
    assert [t["params"] for t in result["trials"]] == [
        {"shrink": 0.0, "half_life": 2.0},
        {"shrink": 10.0, "half_life": 2.0},
    ]
    assert result["params"] in [t["params"] for t in result["trials"]]
    assert result["metric"] == "ndcg@10" and 0.0 <= result["score"] <= 1.0
    als = tune_als(split, items, {"factors": [2, 4], "iterations": [2]}, fixed={"num_threads": 1})
    assert als["params"]["factors"] in (2, 4) and als["params"]["num_threads"] == 1
    # Validation view: fit on tune_events, targets = the validation basket.
    valid = validation_split(split)
    assert valid.fit_events.height == split.tune_events.height
    assert set(valid.test["item_id"]) == {"a"}
    with pytest.raises(ConfigError):
        grid_points({"factors": []})
    with pytest.raises(ConfigError):
        tune("cooc", split, items, {"shrink": [1.0]}, metric="auc")
    no_valid = Split(
        split.fit_events, split.tune_events, split.test, split.valid.clear(), frozenset(), "x"
    )
    with pytest.raises(DataError, match="validation"):
        tune_als(no_valid, items)


def test_coordinate_search(split_items: tuple[Split, pl.DataFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    """Stages start from the best point so far; a point already fitted is not fitted again; the
    earliest of equal scores stays best."""
    import recs.evaluation.tuning as tuning

    split, items = split_items
    scored: list[dict[str, object]] = []

    def fake_evaluate(model: Recommender, *args: object, **kwargs: object) -> dict[str, dict[str, float]]:
        params = model.get_params()
        scored.append(params)
        value = {1: 0.2, 2: 0.5, 3: 0.5}[params["recency"]] + (0.1 if params["q"] == 2.0 else 0.0)
        return {"all": {"ndcg@10": value}}

    monkeypatch.setattr(tuning, "evaluate", fake_evaluate)
    search = ({"recency": (1, 2, 3)}, {"q": (1.0, 2.0)}, {"recency": (2, 3)})
    result = tune("upcf", split, items, search, fixed={"alpha": 1.0})
    assert [t["params"] for t in result["trials"]] == [
        {"alpha": 1.0, "recency": 1},
        {"alpha": 1.0, "recency": 2},
        {"alpha": 1.0, "recency": 3},
        # Stage 2 from recency 2 (tied with 3, found first).
        {"alpha": 1.0, "recency": 2, "q": 1.0},
        {"alpha": 1.0, "recency": 2, "q": 2.0},
        # Stage 3: recency 2 with q 2.0 was fitted already; only recency 3 is new.
        {"alpha": 1.0, "recency": 3, "q": 2.0},
    ]
    assert len(scored) == len(result["trials"])
    assert result["params"] == {"alpha": 1.0, "recency": 2, "q": 2.0}
    assert result["score"] == pytest.approx(0.6)
    # A point equal to the defaults is the same point: q=5.0 is upcf's default q.
    again = tune("upcf", split, items, ({"recency": (2,)}, {"q": (5.0, 2.0)}))
    assert [t["params"] for t in again["trials"]] == [{"recency": 2}, {"recency": 2, "q": 2.0}]


def test_default_searches(split_items: tuple[Split, pl.DataFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    import recs.evaluation.tuning as tuning
    from recs.evaluation import DEFAULT_SEARCHES

    assert set(DEFAULT_SEARCHES) == {"als", "tifu_knn", "upcf"}
    split, items = split_items
    monkeypatch.setattr(tuning, "evaluate", lambda *a, **k: {"all": {"ndcg@10": 0.0}})
    monkeypatch.setattr(tuning, "make_baseline", _unfitted(tuning.make_baseline))
    # Fit counts of the default searches: points repeated across stages are fitted once.
    fits = {name: len(tune(name, split, items)["trials"]) for name in DEFAULT_SEARCHES}
    assert fits == {"als": 19, "tifu_knn": 11, "upcf": 14}
    with pytest.raises(ConfigError, match="no default search"):
        tune("cooc", split, items)
    with pytest.raises(ConfigError, match="search"):
        tune("upcf", split, items, [])
    with pytest.raises(ConfigError, match="stage"):
        tune("upcf", split, items, ["recency"])


def _unfitted(make: Callable[..., Recommender]) -> Callable[..., Recommender]:
    """make_baseline whose models skip fitting: the search's bookkeeping is under test, not ALS."""

    def build(name: str, **params: object) -> Recommender:
        model = make(name, **params)
        model.fit = lambda *a, **k: model  # type: ignore[method-assign]
        return model

    return build


def test_evaluate_baselines_tunes_every_default_search_and_fills_per_user(
    split_items: tuple[Split, pl.DataFrame],
) -> None:
    split, items = split_items
    per_user: dict[tuple[str, str], dict[str, float]] = {}
    rows = evaluate_baselines(
        ["repeat", "upcf", "tifu_knn"], items, split, ks=(10,), tune=True, discover=True, per_user=per_user
    )
    notes = {r["method"]: r["notes"] for r in rows}
    assert "tuned" not in notes["repeat"]
    assert "tuned on validation (14 trials" in notes["upcf"] and "recency=" in notes["upcf"]
    assert "tuned on validation (11 trials" in notes["tifu_knn"]
    assert set(per_user) == {(r["method"], r["slice"]) for r in rows}
    for r in rows:
        by_user = per_user[(r["method"], r["slice"])]
        assert len(by_user) == r["metrics"]["users"]
        mean = sum(by_user.values()) / len(by_user) if by_user else 0.0
        assert mean == pytest.approx(r["metrics"]["ndcg@10"])
    assert set(per_user[("repeat", "all")]) == {"u1", "u2"}
