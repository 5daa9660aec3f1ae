"""Composed bundles against real baskets (recs.evaluation.bundle_tasks) and the bundle item model
(recs.bundling.item_model) that lets the engine's bundles hold what a user buys with the anchor."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from recs.bundling.bundler import ITEM_MODEL_FILE, Bundler
from recs.bundling.composer import BundleConstraints, ItemTable, check_bundle, compose
from recs.bundling.cooc import CoocStats
from recs.bundling.item_model import (
    ABSENT_RANK,
    ITEM_FEATURES,
    ItemModel,
    fit_item_boosters,
    fit_item_model,
    item_features,
)
from recs.data import load_dataset
from recs.errors import ArtifactError
from recs.evaluation.bundle_tasks import (
    BundleQuery,
    bundle_queries,
    bundle_task_rows,
    composed_with_scores,
    evaluate_bundle_method,
    score_bundles,
)
from recs.evaluation.stages import split_for_benchmark
from recs.retrieval.candidates import NEVER_DAYS
from recs.serving import Engine


def small_table(n: int = 12) -> ItemTable:
    return ItemTable(
        item_ids=[f"I{i}" for i in range(n)], titles=[f"item {i}" for i in range(n)],
        prices=np.arange(1.0, n + 1.0), in_stock=np.array([i != n - 1 for i in range(n)]),
        leaves=["" if i % 3 else f"Cat > {i % 2}" for i in range(n)],
    )


# ------------------------------------------------------------------------------------ queries


def test_queries_keep_baskets_of_three_catalog_items_and_draw_the_anchor_from_them() -> None:
    table = small_table()
    targets = pl.DataFrame({
        "user_id": ["u1"] * 3 + ["u2"] * 2 + ["u3"] * 3,
        "item_id": ["I0", "I1", "I2", "I3", "I4", "I5", "I6", "NOPE"],
        "basket_id": ["b1"] * 3 + ["b2"] * 2 + ["b3"] * 3,
    })
    anchored = bundle_queries(targets, table, "anchor_bundle", seed=3)
    assert [q.user_id for q in anchored] == ["u1"]  # u2: two items, u3: two known items
    q = anchored[0]
    assert q.basket == frozenset({0, 1, 2}) and q.anchor in q.basket
    median = float(np.median(table.prices[table.in_stock]))
    assert q.budget == pytest.approx(table.prices[q.anchor] + 3 * median)
    assert bundle_queries(targets, table, "anchor_bundle", seed=3) == anchored  # seeded
    (user,) = bundle_queries(targets, table, "user_bundle")
    assert user.anchor is None and user.budget == pytest.approx(4 * median)
    many = pl.DataFrame({"user_id": [f"u{i // 3}" for i in range(60)], "item_id": [f"I{i % 3}" for i in range(60)],
                         "basket_id": [f"b{i // 3}" for i in range(60)]})
    assert len(bundle_queries(many, table, "user_bundle", max_queries=5)) == 5


def test_scores_of_ranked_bundles_by_hand() -> None:
    query = BundleQuery("u|b", "u", frozenset({0, 1, 2}), 0, None)
    got = score_bundles([(0, 1), (0, 3), (0, 1, 2)], query, n=3)
    assert got["precision"] == pytest.approx((1 + 0 + 1) / 3)
    assert got["hit_rate"] == pytest.approx(2 / 3)
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert got["pair_ndcg"] == pytest.approx((1 + 0 + 1 / np.log2(4)) / ideal)
    assert score_bundles([], query, n=3) == {"precision": 0.0, "hit_rate": 0.0, "pair_ndcg": 0.0}


def test_baseline_bundles_follow_the_scores_under_every_constraint() -> None:
    table = small_table()
    query = BundleQuery("u|b", "u", frozenset({0, 4, 5}), 0, 20.0)
    scores = np.zeros(len(table))
    scores[[4, 5, 7, 11]] = [5.0, 4.0, 3.0, 9.0]  # 11 is out of stock
    bundles = composed_with_scores(table, query, scores, np.ones(len(table)), n=3)
    assert 1 <= len(bundles) <= 3 and 4 in bundles[0]
    for b in bundles:
        assert b[0] == 0 and check_bundle(b, table, query.constraints(table)) == []
    added = [set(b) - {0} for b in bundles]
    assert all(len(a & b) <= 1 for i, a in enumerate(added) for b in added[i + 1:])
    metrics, per_query = evaluate_bundle_method(lambda q: bundles, [query], table, n=3)
    assert metrics["constraint_satisfaction"] == 1.0 and per_query["u|b"] == score_bundles(bundles, query, 3)
    over_budget, _ = evaluate_bundle_method(lambda q: [(0, 9, 10)], [query], table, n=3)
    assert over_budget["constraint_satisfaction"] == 0.0


def test_composer_can_average_relevance_over_the_added_items_only() -> None:
    table = small_table(6)
    constraints = BundleConstraints(min_size=2, max_size=4, anchors=("I0",), allow_same_leaf=frozenset({"*"}))
    relevance = np.array([-100.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    flat = lambda states: np.zeros(len(states))  # noqa: E731
    added = compose(table, [1, 2, 3], constraints, flat, relevance, 1.0, n=1, relevance_of="added").bundles[0]
    members = compose(table, [1, 2, 3], constraints, flat, relevance, 1.0, n=1).bundles[0]
    assert added.rows == (0, 1) and added.objective == pytest.approx(1.0)
    # Over members the anchor's -100 is diluted by size: the largest bundle wins instead.
    assert len(members.rows) == 4


# --------------------------------------------------------------------------------- item model


def test_item_model_learns_the_signal_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, len(ITEM_FEATURES)))
    y = (x[:, 0] - x[:, 3] + 0.3 * rng.normal(size=600) > 0).astype(float)
    model = fit_item_model({"anchor": (x, y), "user": (x[:300], 1.0 - y[:300])})
    assert model.weights["anchor"][0] > 0 > model.weights["anchor"][3]
    assert model.weights["user"][0] < 0  # fitted per mode
    again = ItemModel.from_json(json.loads(json.dumps(model.to_json())), "test")
    np.testing.assert_allclose(again.log_odds(x, "anchor"), model.log_odds(x, "anchor"))
    bad = model.to_json()
    bad["weights"]["anchor"][0] = float("nan")
    with pytest.raises(ArtifactError, match="non-finite"):
        ItemModel.from_json(json.loads(json.dumps(bad)), "m.json")
    with pytest.raises(ArtifactError, match="retrain"):
        ItemModel.from_json({**model.to_json(), "features": ["x"]}, "m.json")
    # One class only in a mode: it borrows the other mode's weights (never NaN).
    lone = fit_item_model({"anchor": (x, y), "user": (x[:10], np.zeros(10))})
    np.testing.assert_array_equal(lone.weights["user"], lone.weights["anchor"])


def test_the_item_models_trees_learn_what_one_weight_per_feature_cannot_and_round_trip(tmp_path: Path) -> None:
    from recs.ranking.config import RankerConfig
    from recs.ranking.ranker import LearnedRanker

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, len(ITEM_FEATURES)))
    y = ((x[:, 4] > 0) == (x[:, 7] > 0)).astype(float)  # an interaction: bought often AND lately, or neither
    sizes = np.full(40, 100)
    logistic = fit_item_model({"user": (x, y)})
    boosters, report = fit_item_boosters({"user": (x, y, sizes), "anchor": (x[:100], np.zeros(100), np.array([100]))},
                                         RankerConfig(objective="binary", min_data_in_leaf=20))
    assert sorted(boosters) == ["user"] and report["user"]["trees"] >= 1  # one label only: no trees
    model = ItemModel(logistic.mean, logistic.std, logistic.weights, boosters=boosters)
    test = rng.normal(size=(1000, len(ITEM_FEATURES)))
    truth = (test[:, 4] > 0) == (test[:, 7] > 0)

    def accuracy(scores: np.ndarray) -> float:
        return float(np.mean((scores > np.median(scores)) == truth))

    assert accuracy(model.log_odds(test, "user")) > 0.9 > 0.6 > accuracy(logistic.log_odds(test, "user"))
    np.testing.assert_array_equal(model.log_odds(test, "anchor"), logistic.log_odds(test, "anchor"))  # no trees: the regression
    boosters["user"].save(tmp_path, "item_booster_user")
    data = json.loads(json.dumps(model.to_json()))
    assert data["boosters"] == ["user"]
    again = ItemModel.from_json(data, "m.json", lambda mode: LearnedRanker.load(tmp_path, f"item_booster_{mode}"))
    np.testing.assert_array_equal(again.log_odds(test, "user"), model.log_odds(test, "user"))
    with pytest.raises(ArtifactError, match="trees for 'user'"):
        ItemModel.from_json(data, "m.json")
    with pytest.raises(ArtifactError, match="other features"):
        ItemModel.from_json(data, "m.json", lambda mode: SimpleNamespace(feature_names=("x",)))
    with pytest.raises(ArtifactError, match="modes"):
        ItemModel.from_json({**data, "boosters": ["other"]}, "m.json")


def test_the_item_models_trees_must_give_log_odds() -> None:
    from recs.bundling.config import ItemModelConfig
    from recs.errors import ConfigError
    from recs.ranking.config import RankerConfig

    assert ItemModelConfig().booster.objective == "binary"
    with pytest.raises(ConfigError, match="log-odds"):
        ItemModelConfig.parse_dict({"booster": RankerConfig(objective="lambdarank").model_dump()})
    # The ranker's caps on candidates and users do nothing here: a changed one is an error, the
    # defaults (in any saved config's dump) read back.
    with pytest.raises(ConfigError, match=r"booster\.n_candidates: not used"):
        ItemModelConfig.parse_dict({"booster": {"objective": "binary", "n_candidates": 50}})
    assert ItemModelConfig.parse_dict(ItemModelConfig().model_dump()) == ItemModelConfig()


def test_item_features_without_anchor_or_user_are_finite_constants() -> None:
    n = 8
    vectors = np.eye(n, dtype=np.float32)
    cooc = CoocStats.from_sets([np.array([0, 1]), np.array([0, 1, 2])], n)
    rows = np.array([1, 2, 5])
    bare = item_features(rows, [], completion=None, cooc=cooc, item_vectors=vectors, user_scores=None, user_vector=None,
                         found=None, popularity=np.arange(n, dtype=float), rebuy_rate=None)
    col = {f: j for j, f in enumerate(ITEM_FEATURES)}
    assert bare.shape == (3, len(ITEM_FEATURES)) and np.all(np.isfinite(bare))
    assert np.all(bare[:, col["anchor_logp"]] == 0) and np.all(bare[:, col["user_logp"]] == -np.log1p(ABSENT_RANK))
    completion = np.linspace(0, 1, n)
    completion[0] = -np.inf  # the anchor itself
    anchored = item_features(rows, [0], completion=completion, cooc=cooc, item_vectors=vectors, user_scores=None,
                             user_vector=None, found=None, popularity=np.zeros(n), rebuy_rate=None)
    assert anchored[:, col["anchor_cooc"]].tolist() == pytest.approx(np.log1p([2, 1, 0]).tolist())
    assert np.all(anchored[:, col["anchor_logp"]] < 0)


@pytest.mark.parametrize(("fmt", "k"), [(1, 13), (2, 17)])
def test_an_older_item_model_scores_as_it_did(fmt: int, k: int) -> None:
    """Format 1 had 13 features, format 2 had 17; read with zero weights on the new ones."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, len(ITEM_FEATURES)))
    y = (x[:, 0] > 0).astype(float)
    model = fit_item_model({"anchor": (x, y), "user": (x, 1.0 - y)})
    old = model.to_json()
    old.update(format=fmt, features=list(ITEM_FEATURES[:k]), mean=old["mean"][:k], std=old["std"][:k],
               weights={m: w[:k] + w[-1:] for m, w in old["weights"].items()})
    upgraded = ItemModel.from_json(json.loads(json.dumps(old)), "old.json")
    z = (x[:, :k] - model.mean[:k]) / model.std[:k]
    w = model.weights["anchor"]
    np.testing.assert_allclose(upgraded.log_odds(x, "anchor"), z @ w[:k] + w[-1])
    old.update(features=list(ITEM_FEATURES[:k - 1]))
    with pytest.raises(ArtifactError, match="other features"):
        ItemModel.from_json(old, "old.json")


def test_history_cooc_and_category_affinity_features() -> None:
    n = 8
    cooc = CoocStats.from_sets([np.array([0, 1]), np.array([0, 1, 2]), np.array([3, 4])], n)
    summed = cooc.summed([0, 3, 0])  # distinct rows: a repeat counts once
    assert dict(zip(summed.rows.tolist(), summed.values.tolist(), strict=True)) == {1: 2.0, 2: 1.0, 4: 1.0}  # no self-pairs
    assert summed.top(2).tolist() == [1, 2] and cooc.summed([]).rows.size == 0
    rows = np.array([1, 4, 7])
    x = item_features(rows, [], completion=None, cooc=cooc, item_vectors=np.eye(n, dtype=np.float32), user_scores=None,
                      user_vector=None, found=None, popularity=np.zeros(n), rebuy_rate=None,
                      history_cooc=np.array([2.0, 1.0, 0.0]), affinity=(np.array([0.5, 0.0, 0.0]), np.array([1.0, 0.25, 0.0])))
    col = {f: j for j, f in enumerate(ITEM_FEATURES)}
    np.testing.assert_allclose(x[:, col["history_cooc"]], np.log1p([2.0, 1.0, 0.0]))
    assert x[:, col["leaf_affinity"]].tolist() == [0.5, 0.0, 0.0] and x[:, col["top_affinity"]].tolist() == [1.0, 0.25, 0.0]
    assert np.all(x[:, col["price_tier_gap"]] == 0) and np.all(x[:, col["trending"]] == 0)
    trending = np.zeros(n)
    trending[[1, 7]] = [3.0, 0.5]
    x = item_features(rows, [], completion=None, cooc=cooc, item_vectors=np.eye(n, dtype=np.float32), user_scores=None,
                      user_vector=None, found=None, popularity=np.zeros(n), rebuy_rate=None, trending=trending)
    np.testing.assert_allclose(x[:, col["trending"]], np.log1p([3.0, 0.0, 0.5]))
    x = item_features(rows, [], completion=None, cooc=cooc, item_vectors=np.eye(n, dtype=np.float32), user_scores=None,
                      user_vector=None, found=None, popularity=np.zeros(n), rebuy_rate=None,
                      days_since_first_sold=np.array([0.0, 30.0, NEVER_DAYS]))
    np.testing.assert_allclose(x[:, col["log_days_since_first_sold"]], np.log1p([0.0, 30.0, NEVER_DAYS]))
    assert np.all(x[:, col["trending"]] == 0)


def test_price_tier_gap_is_the_distance_from_the_users_usual_price_rank_in_a_leaf() -> None:
    from recs.bundling.item_model import price_ranks, user_price_tier_gap

    prices = np.array([1.0, 2.0, 2.0, np.nan, 5.0, 7.0, 3.0, np.inf])
    ranks = price_ranks(prices, np.array([0, 0, 0, 0, 1, -1, -1, 0]))
    # leaf 0: 1 < 2 = 2 (ties share their mean rank); leaf 1 has one priced item; no category: 3 < 7
    np.testing.assert_allclose(ranks, [0.0, 0.75, 0.75, np.nan, np.nan, 1.0, 0.0, np.nan])
    assert price_ranks(np.zeros(0), np.zeros(0, np.int64)).shape == (0,)
    # a budget buyer (ranks 0 and 0): the dear item is far, the unranked one 0
    np.testing.assert_allclose(user_price_tier_gap(ranks, np.array([0, 6]), np.array([1, 5, 3])), [0.75, 1.0, 0.0])
    assert user_price_tier_gap(ranks, np.array([3, 4]), np.array([0])) is None  # no purchase has a rank


# ------------------------------------------------------------------------------ on a tiny shop


@pytest.fixture(scope="module")
def bundled(trained_artifact: Path, small_demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import copy_with_set_scorer

    return copy_with_set_scorer(trained_artifact, tmp_path_factory.mktemp("tasks") / "model", small_demo_dir)


def test_fit_learns_an_item_model_that_is_saved_and_served(bundled: Path, small_demo_dir: Path) -> None:
    engine = Engine.load(bundled)
    bundler = engine.bundler
    assert bundler is not None and bundler.item_model is not None
    assert ITEM_MODEL_FILE in json.loads((bundled / "manifest.json").read_text())["components"]["set_scorer"]["files"]
    report = bundler.item_model.report
    assert report["baskets"] > 0 and report["anchor"]["positives"] > 0
    # The fit's requests gathered what only the item model reads: it learnt from every feature.
    col = {f: j for j, f in enumerate(ITEM_FEATURES)}
    assert bundler.item_model.mean[col["history_cooc"]] > 0 and bundler.item_model.weights["user"][col["history_cooc"]] != 0
    again = Bundler.load(bundled, bundler.retriever)
    np.testing.assert_array_equal(again.item_model.weights["anchor"], bundler.item_model.weights["anchor"])
    # The default model is the trees (saved as LightGBM text beside the JSON), one per mode.
    assert bundler.config.item_model.model == "boosted" and sorted(again.item_model.boosters) == ["anchor", "user"]
    assert report["boosters"]["user"]["trees"] >= 1
    x = np.random.default_rng(0).normal(size=(20, len(ITEM_FEATURES)))
    for mode in ("anchor", "user"):
        np.testing.assert_array_equal(again.item_model.log_odds(x, mode), bundler.item_model.log_odds(x, mode))
    # The held-out baskets chose the item model's weight in the compose objective, per mode.
    selection = report["item_weight_selection"]
    assert selection and again.item_model.item_weights == bundler.item_model.item_weights
    for mode, chosen in bundler.item_model.item_weights.items():
        assert chosen in bundler.config.item_model.weight_grid and selection[mode]["chosen"] == chosen
    user = load_dataset(small_demo_dir)[0].events["user_id"][0]
    default = [b.item_ids for b in bundler.compose(user, n=2)]  # composed with the chosen weight
    assert default == [b.item_ids for b in bundler.compose(user, n=2, relevance_weight=bundler.item_model.item_weights["user"])]


def test_a_users_bundle_candidates_hold_what_their_purchases_were_bought_with(bundled: Path, small_demo_dir: Path) -> None:
    bundler = Engine.load(bundled).bundler
    assert bundler is not None and bundler.item_model is not None
    events = load_dataset(small_demo_dir)[0].events
    user = events.filter(pl.col("event") == "purchase")["user_id"][0]
    req = bundler.request(user, None, None, "raise", [], False, ())
    summed = req.history_cooc
    assert len(summed.rows) and np.all(summed.values > 0)
    assert all("copurchase" in req.sources[int(r)] for r in summed.top(bundler.config.compose.n_history_cooc))
    x = bundler.item_features(req, np.asarray(sorted(req.sources), np.int64))
    col = {f: j for j, f in enumerate(ITEM_FEATURES)}
    assert np.all(np.isfinite(x)) and x[:, col["history_cooc"]].max() > 0 and x[:, col["top_affinity"]].max() > 0
    assert x[:, col["price_tier_gap"]].max() > 0
    config = bundler.config
    bundler.config = config.model_copy(update={"compose": config.compose.model_copy(update={"n_history_cooc": 0})})
    try:
        fewer = bundler.request(user, None, None, "raise", [], False, ())
    finally:
        bundler.config = config
    assert set(fewer.sources) <= set(req.sources)


class _WeightProbe:
    """A stand-in bundler whose bundles hold the basket's items only at one weight."""

    def __init__(self, table: ItemTable, good: float) -> None:
        self.table, self.good, self.item_model = table, good, None
        self.seen: list[object] = []

    def compose(self, user_id: str | None = None, *, items: Sequence[str] = (), size: tuple[int, int] = (2, 4),
                budget: float | None = None, n: int = 3, relevance_weight: float | None = None) -> list[SimpleNamespace]:
        self.seen.append(self.item_model)
        added = ["I1", "I2"] if relevance_weight == self.good else ["I7", "I8"]
        return [SimpleNamespace(item_ids=[*items, *added])]


def test_item_weight_selection_takes_the_weight_whose_bundles_were_bought() -> None:
    from recs.bundling.config import ItemModelConfig
    from recs.bundling.item_training import select_item_weights

    table = small_table()
    held = pl.DataFrame({"user_id": [f"u{i // 4}" for i in range(20)], "item_id": ["I0", "I1", "I2", "I3"] * 5,
                         "basket_id": [f"b{i // 4}" for i in range(20)]})
    x = np.zeros((4, len(ITEM_FEATURES)))
    model = fit_item_model({"user": (x, np.array([0.0, 1.0, 0.0, 1.0]))})
    probe = _WeightProbe(table, good=3.0)
    select_item_weights(probe, held, model, ItemModelConfig(weight_grid=[1.0, 3.0]), seed=0, default_weight=10.0)
    assert model.item_weights == {"anchor": 3.0, "user": 3.0}
    assert model.report["item_weight_selection"]["user"]["precision"] == {"1": 0.0, "3": 1.0, "10": 0.0}  # the default too
    assert all(seen is model for seen in probe.seen) and probe.item_model is None  # used, then put back
    # A tie (or a gain within one standard error) keeps the default.
    tie = fit_item_model({"user": (x, np.array([0.0, 1.0, 0.0, 1.0]))})
    select_item_weights(_WeightProbe(table, good=-1.0), held, tie, ItemModelConfig(weight_grid=[1.0, 3.0]), seed=0, default_weight=10.0)
    assert tie.item_weights == {"anchor": 10.0, "user": 10.0}
    bad = tie.to_json()
    bad["item_weights"] = {"user": -1}
    with pytest.raises(ArtifactError, match="item_weights"):
        ItemModel.from_json(bad, "m.json")
    assert ItemModel.from_json({k: v for k, v in tie.to_json().items() if k != "item_weights"}, "old.json").item_weights == {}


def test_composed_bundle_tasks_on_a_tiny_shop(bundled: Path, small_demo_dir: Path) -> None:
    dataset, _ = load_dataset(small_demo_dir)
    split = split_for_benchmark(dataset)
    bundler = Engine.load(bundled).bundler
    untrained = Bundler(bundler.retriever, bundler.scorer, bundler.config, bundler.bundles)  # no item model
    lines: list[str] = []
    rows = bundle_task_rows("demo", split.test, split.fit_events, dataset.items, bundler, untrained,
                            max_queries=8, log=lines.append)
    by = {(r["slice"], r["method"]): r for r in rows}
    assert {s for s, _ in by} == {"anchor_bundle", "user_bundle"}
    assert {m for _, m in by} == {"engine", "cooc", "item_similarity", "tifu_knn", "repeat", "untrained"}
    for row in rows:
        m = row["metrics"]
        assert m["constraint_satisfaction"] == 1.0 and 0 < m["users"] <= 8
        assert all(0.0 <= m[k] <= 1.0 for k in ("precision", "hit_rate", "pair_ndcg"))
    engine = by[("anchor_bundle", "engine")]
    assert {"ratio_vs_best", "delta_ci_low", "delta_ci_high"} <= set(engine["metrics"])
    assert "best baseline by precision" in engine["notes"] and any("engine vs cooc" in line for line in lines)


def test_merge_keeps_the_rows_of_every_dataset_and_task_not_rerun(tmp_path: Path) -> None:
    import sys

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # `benchmarks` is a folder beside `recs`, not an installed package
        sys.path.insert(0, root)
    from benchmarks.bundles import kept_rows

    old = [{"dataset": d, "slice": s, "method": "engine"} for d in ("demo", "online_retail") for s in ("anchor_bundle", "bundle_completion")]
    path = tmp_path / "bundles.json"
    path.write_text(json.dumps({"rows": old}), encoding="utf-8")
    new = [{"dataset": "demo", "slice": "anchor_bundle", "method": "cooc"}]
    assert [(r["dataset"], r["slice"]) for r in kept_rows(path, new)] == [
        ("demo", "bundle_completion"), ("online_retail", "anchor_bundle"), ("online_retail", "bundle_completion")]
    assert kept_rows(tmp_path / "missing.json", new) == []


class _RequestProbe:
    """A stand-in bundler for `fit_bundle_item_model`: every request proposes every item."""

    def __init__(self, table: ItemTable) -> None:
        self.table, self.item_model = table, None
        self.requests: list[tuple[str, tuple[int, ...]]] = []

    def request(self, user_id: str | None, history: object, text: object, policy: object, anchor_rows: list[int],
                in_stock: bool, exclude: Sequence[str]) -> SimpleNamespace:
        self.requests.append((str(user_id), tuple(anchor_rows)))
        return SimpleNamespace(sources={row: {"user"} for row in range(len(self.table))}, mode="anchor" if anchor_rows else "user")

    def item_features(self, req: object, rows: np.ndarray) -> np.ndarray:
        return np.random.default_rng(len(self.requests)).normal(size=(len(rows), len(ITEM_FEATURES)))


def test_the_user_mode_learns_only_from_baskets_of_a_bundle_requests_size() -> None:
    """One- and two-item held-out baskets (mostly re-buys) teach only the anchor mode; a basket of
    MIN_BASKET_ITEMS items teaches both."""
    from recs.bundling.basket_queries import MIN_BASKET_ITEMS
    from recs.bundling.config import ItemModelConfig
    from recs.bundling.item_training import fit_bundle_item_model

    sizes = {"u1": 1, "u2": 2, "u3": MIN_BASKET_ITEMS, "u4": MIN_BASKET_ITEMS + 1}
    held = pl.DataFrame([{"user_id": u, "item_id": f"I{i}", "basket_id": f"b{u}"} for u, n in sizes.items() for i in range(n)])
    probe = _RequestProbe(small_table())
    model = fit_bundle_item_model(probe, held, ItemModelConfig(select_baskets=0), seed=0, default_weight=10.0)
    assert model is not None
    users_alone = sorted(u for u, anchors in probe.requests if not anchors)
    with_anchor = sorted(u for u, anchors in probe.requests if anchors)
    assert users_alone == ["u3", "u4"] and with_anchor == ["u2", "u3", "u4"]
