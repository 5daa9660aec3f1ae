"""Bundling: training data, the set scorer (math, training, save/load), the bundler, Engine and CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from recs.bundling import training
from recs.bundling.bundler import Bundler, save_bundler
from recs.bundling.composer import BundleConstraints, check_bundle
from recs.bundling.config import BundlerConfig, SetScorerConfig, SetTrainConfig
from recs.bundling.cooc import CoocStats
from recs.bundling.prior import fit_logistic, fit_prior, prior_features
from recs.bundling.scorer import SetScorer, SetScorerNet, upgrade_state
from recs.bundling.sets import NegativeSampler, collect_sets, leaf_ids, nearest_items
from recs.bundling.training import clears_prior, fit_set_scorer, roc_auc
from recs.cli import app
from recs.data import load_dataset
from recs.errors import DataError, NotFittedError, UnknownItemError
from recs.retrieval.retriever import Retriever
from recs.serving import Engine

FAST = SetTrainConfig(epochs=2, batch_size=32, patience=1)
SMALL = SetScorerConfig(hidden=16, pair_rank=8)


@pytest.fixture(scope="module")
def demo(small_demo_dir: Path):
    dataset, _ = load_dataset(small_demo_dir)
    return dataset


@pytest.fixture(scope="module")
def retriever(trained_artifact: Path) -> Retriever:
    return Retriever.load(trained_artifact)


@pytest.fixture(scope="module")
def bundled_artifact(trained_artifact: Path, demo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained artifact with a (quickly) trained set scorer."""
    target = Path(shutil.copytree(trained_artifact, tmp_path_factory.mktemp("bundled") / "model"))
    retriever = Retriever.load(target)
    config = BundlerConfig(scorer=SMALL, train=FAST)
    bundler = Bundler.fit(retriever, demo.events, demo.bundles, config, work_dir=target.parent / "work", show_progress=False)
    save_bundler(target, bundler)
    return target


def random_vectors(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ------------------------------------------------------------------------------ training data


def test_sets_from_orders_sessions_and_bundles(shop_dir: Path) -> None:
    dataset, _ = load_dataset(shop_dir)
    row_of = {item: row for row, item in enumerate(dataset.items["item_id"].to_list())}
    sets = collect_sets(row_of, dataset.events, dataset.bundles)
    assert sets.counts() == {"order": 3, "bundle": 2}  # o1, o8, o10 have two items each
    by_id = dict(zip(sets.set_ids, sets.rows, strict=True))
    assert sorted(by_id["o:o10"].tolist()) == sorted([row_of["C1"], row_of["P2"]])
    # u3's order o10 comes after o8 and o9: its history is what u3 bought before.
    hist = sets.histories[sets.set_ids.index("o:o10")]
    assert [dataset.items["item_id"][int(r)] for r in hist] == ["P1", "P2", "P3"]
    # Purchases without an order id form session baskets.
    events = dataset.events.with_columns(pl.lit(None, dtype=pl.Utf8).alias("order_id"))
    from recs.data.baskets import assign_baskets

    sessions = collect_sets(row_of, assign_baskets(events.drop("basket_id")), None)
    assert set(sessions.sources) == {"session"} and len(sessions) >= 2


def test_bundle_equal_to_a_basket_is_kept_once() -> None:
    row_of = {"a": 0, "b": 1, "c": 2}
    bundles = pl.DataFrame({"bundle_id": ["x", "x", "y", "y"], "item_id": ["a", "b", "b", "c"], "title": ["t"] * 4})
    copy = bundles.filter(pl.col("bundle_id") == "x").with_columns(pl.lit("z").alias("bundle_id"))
    sets = collect_sets(row_of, None, pl.concat([bundles, copy]))
    assert sets.set_ids == ["b:x", "b:y"]


def test_cooc_leave_self_out_and_lookups() -> None:
    sets = [np.array([0, 1, 2]), np.array([0, 1]), np.array([3, 4])]
    cooc = CoocStats.from_sets(sets, 6)
    assert cooc.pair_counts(np.array([0, 1, 0, 5]), np.array([1, 0, 3, 5])).tolist() == [2, 2, 0, 0]
    assert cooc.freq.tolist() == [2, 2, 1, 1, 1, 0]
    own = cooc.pair_features(np.array([0]), np.array([1]), True, True)[0]
    other = cooc.pair_features(np.array([0]), np.array([1]))[0]
    assert own[0] == pytest.approx(np.log1p(1)) and other[0] == pytest.approx(np.log1p(2))
    np.testing.assert_allclose(cooc.row_features(0)[[1, 2, 3]], cooc.pair_features(np.zeros(3, int), np.array([1, 2, 3])))
    # Catalog re-ordered, item 5 dropped, a new item appended.
    moved = cooc.remap(np.array([1, 0, 2, 3, 4, -1]), 7)
    assert moved.pair_counts(np.array([1]), np.array([0])).tolist() == [2] and moved.freq[6] == 0


def test_negative_sampler_kinds() -> None:
    rng = np.random.default_rng(0)
    leaves = np.array([0, 0, 0, 1, 1, -1, -1, 2])
    vectors = random_vectors(8)
    cooc = CoocStats.from_sets([np.array([0, 3]), np.array([1, 4, 5])], 8)
    sampler = NegativeSampler(8, leaves, nearest_items(vectors, np.arange(8)), cooc)
    subs = sampler.substitute(np.array([0, 3, 5, 7]), 50, rng)
    assert set(subs[0]) <= {1, 2} and set(subs[1]) == {4}
    assert 5 not in set(subs[2])  # no leaf: nearest items, never itself
    assert (subs[3] != 7).all()  # alone in its leaf: nearest items
    assert set(sampler.popular(1, 200, rng)[0]) >= {0, 1, 3, 4, 5}
    rest = np.array([[0, -1], [1, 4]])
    co = sampler.cooc_members(rest, 30, rng)
    assert set(co[0]) == {3}  # 0 was only bought with 3
    assert sampler.corrupt(np.array([0, 3]), "substitute", rng) is not None


def test_roc_auc() -> None:
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert roc_auc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5


# ------------------------------------------------------------------------------ the set scorer


def randomised(net: SetScorerNet, seed: int = 1, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Every tensor of the net's state (less `skip`) drawn at random, seeded: a 'trained' net."""
    gen = torch.Generator().manual_seed(seed)
    return {k: 0.3 * torch.randn(v.shape, generator=gen) for k, v in sorted(net.state_dict().items()) if k not in skip}


NEW_BUFFERS = ("prior_bias", "prior_weight", "residual_gate")
TINY_SETS = [np.array([0, 1, 2]), np.array([1, 3]), np.array([2, 3, 4])]


@pytest.mark.parametrize("trained", [False, True])
def test_completion_equals_scoring_the_completed_set(trained: bool) -> None:
    torch.manual_seed(0)
    vectors = random_vectors(12)
    cooc = CoocStats.from_sets(TINY_SETS, 12)
    net = SetScorerNet(16, SMALL)
    if trained:  # a residual that is not zero, a fitted prior, a gate < 1
        net.load_state_dict(randomised(net, skip=NEW_BUFFERS), strict=False)
        net.set_prior([3.0, 1.5, -0.5, 2.0], -1.25)
        net.set_gate(0.5)
    scorer = SetScorer(net, vectors, cooc)
    rests = [np.array([0, 1]), np.array([3]), np.array([2, 3, 4])]
    user, _ = scorer.user_vectors([[5, 6]])
    for u in (None, user[0]):
        fast = scorer.complete(rests, user=u)
        for b, rest in enumerate(rests):
            for c in range(12):
                if c in rest:
                    assert fast[b, c] == -np.inf
                    continue
                users = None if u is None else u[None, :]
                slow = scorer.score([np.append(rest, c)], users, None if u is None else np.array([True]))[0][0]
                assert fast[b, c] == pytest.approx(slow, abs=1e-4)


def test_untrained_scorer_is_the_prior() -> None:
    vectors = random_vectors(12)
    scorer = SetScorer(SetScorerNet(16, SMALL), vectors, CoocStats.from_sets(TINY_SETS, 12))
    sets = [[0, 1, 2], [1, 3], [2, 3, 4, 5], [6, 7], [8]]
    x, _, pair, mask = scorer.set_features(collect_pad(sets))
    for weight, bias in (([10.0, 10.0, 10.0, 5.0], 0.0), ([2.5, 0.7, -1.0, 3.0], -0.8)):
        scorer.net.set_prior(weight, bias)
        want = prior_features(x, pair, mask).numpy() @ np.asarray(weight, np.float32) + bias
        np.testing.assert_allclose(scorer.score(sets)[0], want, rtol=1e-5, atol=1e-5)
        # The gate scales a residual that is zero: it changes nothing.
        scorer.net.set_gate(0.25)
        np.testing.assert_allclose(scorer.score(sets)[0], want, rtol=1e-5, atol=1e-5)
        scorer.net.set_gate(1.0)
    assert {"prior_weight", "prior_bias", "residual_gate"}.isdisjoint(n for n, _ in scorer.net.named_parameters())


def collect_pad(sets: list[list[int]]) -> np.ndarray:
    from recs.bundling.sets import pad

    return pad([np.asarray(s, np.int64) for s in sets])


def test_prior_fit_is_seeded_finite_and_separates(demo) -> None:
    items = demo.items
    row_of = {item: row for row, item in enumerate(items["item_id"].to_list())}
    sets = collect_sets(row_of, demo.events, demo.bundles)
    vectors = random_vectors(items.height, 24)
    cooc = CoocStats.from_sets(sets.rows, items.height)
    sampler = NegativeSampler(items.height, leaf_ids(items["category"].to_list()), nearest_items(vectors, np.arange(items.height)), cooc)
    fits = []
    for _ in range(2):
        scorer = SetScorer(SetScorerNet(24, SMALL), vectors, cooc)
        fits.append(fit_prior(scorer, sampler, sets.rows, seed=3))
    assert fits[0] == fits[1] and fits[0]["fitted"]
    assert all(np.isfinite(v) for v in [*fits[0]["weights"].values(), fits[0]["bias"]])
    np.testing.assert_allclose(scorer.net.prior_weight.numpy(), list(fits[0]["weights"].values()), rtol=1e-6)
    assert fits[0]["weights"]["log1p_count"] > 0  # real sets were bought together, corruptions rarely
    # Separable, constant and one-class inputs stay finite or are refused.
    w, b = fit_logistic(np.array([[0.0, 1, 0, 0], [1.0, 1, 0, 0]]), np.array([0.0, 1.0]))
    assert np.isfinite(w).all() and np.isfinite(b) and w[0] > 0 and w[1:].tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        fit_logistic(np.zeros((3, 4)), np.ones(3))


def test_training_keeps_the_prior_and_never_ends_below_it(demo) -> None:
    items = demo.items
    row_of = {item: row for row, item in enumerate(items["item_id"].to_list())}
    sets = collect_sets(row_of, demo.events, demo.bundles)
    scorer = fit_set_scorer(random_vectors(items.height, 24), leaf_ids(items["category"].to_list()), sets, SMALL, FAST)
    report = scorer.report
    np.testing.assert_allclose(scorer.net.prior_weight.numpy(), list(report["prior"]["weights"].values()), rtol=1e-6)
    assert float(scorer.net.prior_bias) == pytest.approx(report["prior"]["bias"], rel=1e-6)
    assert float(scorer.net.residual_gate) == report["residual_gate"] in (1.0, 0.75, 0.5, 0.25, 0.0)
    assert report["history"][0] == {"epoch": 0, "step": 0, **report["prior_metrics"]}
    assert clears_prior(report["valid_metrics"], report["prior_metrics"])
    assert report["best_metric"] == report["valid_metrics"]["ndcg@10"]
    assert report["best_metric"] >= report["prior_metrics"]["ndcg@10"]
    assert all(g["qualifies"] == clears_prior(g, report["prior_metrics"]) for g in report["gates"])


@pytest.mark.parametrize(("hurt_below", "want_gate"), [(0.0, 0.0), (0.5, 0.5)])
def test_gate_selection_keeps_the_prior_when_the_residual_hurts_auc(demo, monkeypatch: pytest.MonkeyPatch, hurt_below: float, want_gate: float) -> None:
    """The residual helps completion (ndcg grows with the gate) but costs substitute AUC above
    `hurt_below`: the chosen gate is the largest that keeps every AUC at the prior's."""

    def fake_validate(scorer: SetScorer, data, own: bool) -> dict[str, float]:
        net = scorer.net
        trained = bool(net.readout.abs().sum() > 0)
        gate = float(net.residual_gate) if trained else 0.0
        return {
            "auc_substitute": 0.8 - 0.1 * max(0.0, gate - hurt_below), "auc_random": 0.9 + 0.01 * gate,
            "auc_popular": 0.9, "auc": 0.0, "recall@10": 0.0, "ndcg@10": 0.1 + 0.2 * gate,
        }

    monkeypatch.setattr(training, "_validate", fake_validate)
    items = demo.items
    row_of = {item: row for row, item in enumerate(items["item_id"].to_list())}
    sets = collect_sets(row_of, demo.events, demo.bundles)
    scorer = fit_set_scorer(random_vectors(items.height, 24), leaf_ids(items["category"].to_list()), sets, SMALL, FAST)
    report = scorer.report
    assert report["residual_gate"] == want_gate == float(scorer.net.residual_gate)
    assert report["best_epoch"] >= 1  # the trained weights (and preference head) are kept
    assert report["valid_metrics"]["auc_substitute"] >= report["prior_metrics"]["auc_substitute"]
    assert [g["gate"] for g in report["gates"] if not g["qualifies"]] == [g for g in (1.0, 0.75, 0.5, 0.25) if g > hurt_below]


def test_training_from_bundles_alone_and_baskets_alone(demo) -> None:
    items = demo.items
    row_of = {item: row for row, item in enumerate(items["item_id"].to_list())}
    vectors = random_vectors(items.height, 24)
    leaves = leaf_ids(items["category"].to_list())
    only_bundles = collect_sets(row_of, None, demo.bundles)
    only_baskets = collect_sets(row_of, demo.events, None)
    assert set(only_bundles.sources) == {"bundle"} and set(only_baskets.sources) == {"order"}
    for sets in (only_bundles, only_baskets):
        scorer = fit_set_scorer(vectors, leaves, sets, SMALL, FAST)
        report = scorer.report
        assert report["epochs_run"] >= 1 and report["history"][0]["epoch"] == 0
        assert {"auc_substitute", "auc_random", "auc_popular"} <= set(report["history"][-1])
        assert np.isfinite(scorer.score(sets.rows[:3])[0]).all()
    assert fit_set_scorer(vectors, leaves, only_baskets, SMALL, FAST).report["preference_pairs"] > 0
    with pytest.raises(DataError, match="at least 2 sets"):
        fit_set_scorer(vectors, leaves, collect_sets(row_of, None, None), SMALL, FAST)


def test_training_is_seeded_and_keeps_the_best_checkpoint(demo, tmp_path: Path) -> None:
    items = demo.items
    row_of = {item: row for row, item in enumerate(items["item_id"].to_list())}
    sets = collect_sets(row_of, demo.events, demo.bundles)
    vectors = random_vectors(items.height, 24)
    leaves = leaf_ids(items["category"].to_list())
    a = fit_set_scorer(vectors, leaves, sets, SMALL, FAST, work_dir=tmp_path / "w")
    b = fit_set_scorer(vectors, leaves, sets, SMALL, FAST)
    np.testing.assert_array_equal(a.score(sets.rows[:20])[0], b.score(sets.rows[:20])[0])
    lines = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(len(lines)))
    key = a.report["selected_on"]
    best = max(lines, key=lambda x: x[key])  # the first of equals: later epochs must improve
    # The kept weights: the best epoch, or the best whose corruption AUCs all clear the prior's.
    assert best["epoch"] == a.report["gates"][0]["epoch"]
    assert a.report["best_epoch"] in {g["epoch"] for g in a.report["gates"]}


# Format 1 (before the fitted prior): `randomised(net)` with these keys scored these logits.
FORMAT1_SETS = [[0, 1, 2], [1, 3], [2, 3, 4, 5], [6, 7]]
FORMAT1_SET_LOGITS = [-0.023353, -0.071426, -0.042786, 0.212016]
FORMAT1_PREFERENCE = [-0.690171, -0.246308, 0.0, -0.75229]
FORMAT1_COMPLETION = [-0.023353, -0.030955, 0.0366]  # rest [0, 1] + items 2, 3, 8


def test_format1_weights_load_and_score_as_before() -> None:
    net = SetScorerNet(16, SMALL)
    old = randomised(net, skip=NEW_BUFFERS)  # the old layout: no prior buffers, no gate
    assert set(net.state_dict()) - set(old) == set(NEW_BUFFERS)
    from recs.retrieval.checkpoint import load_model_state

    load_model_state(net, upgrade_state(old, 1))
    assert float(net.residual_gate) == 1.0 and not net.prior_weight.any() and float(net.prior_bias) == 0.0
    scorer = SetScorer(net, random_vectors(12), CoocStats.from_sets(TINY_SETS, 12))
    np.testing.assert_allclose(scorer.score(FORMAT1_SETS)[0], FORMAT1_SET_LOGITS, atol=2e-6)
    users, has = scorer.user_vectors([[5, 6], [0], [], [1, 2]])
    np.testing.assert_allclose(scorer.score(FORMAT1_SETS, users, has)[1], FORMAT1_PREFERENCE, atol=2e-6)
    np.testing.assert_allclose(scorer.complete([[0, 1]], np.array([2, 3, 8]))[0], FORMAT1_COMPLETION, atol=2e-6)
    with pytest.raises(Exception, match="missing"):
        load_model_state(SetScorerNet(16, SMALL), upgrade_state(old, 2))


def test_format1_artifact_loads(bundled_artifact: Path, retriever: Retriever, tmp_path: Path) -> None:
    """An artifact written before the fitted prior (format 1) loads through `Bundler.load`, and
    scores as its weights did (a zero prior, gate 1)."""
    from recs.artifacts import ArtifactWriter
    from recs.bundling import bundler as bundler_module
    from recs.retrieval.checkpoint import load_model_state

    target = Path(shutil.copytree(bundled_artifact, tmp_path / "model"))
    current = Bundler.load(target, retriever)
    old = randomised(current.scorer.net, seed=4, skip=NEW_BUFFERS)
    meta = json.loads((target / "set_scorer" / "config.json").read_text())
    with ArtifactWriter(target, base=target) as writer:
        current.write(writer)
        writer.write_safetensors("set_scorer/weights.safetensors", old)
        writer.write_json("set_scorer/config.json", {**meta, "format": 1})
    loaded = Bundler.load(target, retriever)
    assert bundler_module.BUNDLER_FORMAT == 2 and 1 in bundler_module.READABLE_FORMATS
    assert float(loaded.scorer.net.residual_gate) == 1.0 and not loaded.scorer.net.prior_weight.any()
    want = SetScorerNet(current.scorer.net.item_dim, current.config.scorer)
    load_model_state(want, upgrade_state(old, 1))
    sets = [[0, 1, 2], [3, 4], [5, 6, 7, 8]]
    np.testing.assert_array_equal(loaded.scorer.score(sets)[0], SetScorer(want, loaded.scorer.item_vectors, loaded.scorer.cooc).score(sets)[0])


# ------------------------------------------------------------------------------ bundler


def test_save_load_identical(bundled_artifact: Path, retriever: Retriever) -> None:
    engine = Engine.load(bundled_artifact)
    assert engine.bundler is not None
    again = Bundler.load(bundled_artifact, retriever)
    sets = [list(range(i, i + 3)) for i in range(0, 30, 3)]
    np.testing.assert_array_equal(engine.bundler.scorer.score(sets)[0], again.scorer.score(sets)[0])
    np.testing.assert_array_equal(engine.bundler.scorer.cooc.keys, again.scorer.cooc.keys)
    first = engine.bundle("U0001", size=(2, 3), n=2)
    assert [b.to_dict() for b in first] == [b.to_dict() for b in again.compose("U0001", size=(2, 3), n=2)]
    files = json.loads((bundled_artifact / "manifest.json").read_text())["components"]["set_scorer"]["files"]
    assert all(f.startswith("set_scorer/") and not f.endswith((".pkl", ".pt", ".bin")) for f in files)


def test_engine_bundles_satisfy_constraints_and_explain(bundled_artifact: Path) -> None:
    engine = Engine.load(bundled_artifact)
    bundler = engine.bundler
    table = bundler.table
    in_stock = [i for i, ok in zip(table.item_ids, table.in_stock, strict=True) if ok]
    anchor = next(i for i in in_stock if table.leaves[table.row_of[i]] and np.isfinite(table.prices[table.row_of[i]]))
    price = float(table.prices[table.row_of[anchor]])
    buyer = bundler.retriever.events.filter(pl.col("event") == "purchase")["user_id"][0]
    for kwargs in ({"item": anchor}, {"item": anchor, "budget": price + 60.0}, {"user_id": buyer}, {"user_id": buyer, "item": anchor}):
        bundles = engine.bundle(size=(2, 4), n=3, **kwargs)
        constraints = BundleConstraints(
            min_size=2, max_size=4, budget=kwargs.get("budget"), anchors=(anchor,) if "item" in kwargs else (),
        )
        assert bundles or bundles.reason
        for b in bundles:
            rows = [table.row_of[i] for i in b.item_ids]
            assert check_bundle(rows, table, constraints) == []
            assert all(i.reason for i in b.items)
            assert (b.items[0].reason == "anchor") == ("item" in kwargs)
            assert 0.0 <= b.set_score <= 1.0  # a probability: a sure set saturates at 1.0
            if b.total_price is not None:
                assert b.total_price == pytest.approx(sum(i.price for i in b.items))
        assert len({tuple(sorted(b.item_ids)) for b in bundles}) == len(bundles)
        assert [b.to_dict() for b in engine.bundle(size=(2, 4), n=3, **kwargs)] == [b.to_dict() for b in bundles]
    user = engine.bundle(buyer, item=anchor)
    assert user and all(b.user_preference is not None and 0 < b.user_preference < 1 for b in user)
    assert all(b.user_preference is None for b in engine.bundle(item=anchor))
    # Infeasible: an empty list with a reason.
    none = engine.bundle(item=anchor, budget=price / 2)
    assert list(none) == [] and "budget" in none.reason
    with pytest.raises(UnknownItemError):
        engine.bundle(item="NOPE")


def test_rank_curated_bundles(bundled_artifact: Path) -> None:
    engine = Engine.load(bundled_artifact)
    ranked = engine.rank_bundles("U0003", k=3)
    assert 1 <= len(ranked) <= 3 and [r.rank for r in ranked] == list(range(1, len(ranked) + 1))
    assert all(0 < r.score < 1 and r.item_ids for r in ranked)
    assert ranked[0].score >= ranked[-1].score


def test_engine_without_set_scorer(trained_artifact: Path) -> None:
    engine = Engine.load(trained_artifact)
    assert engine.bundler is None
    with pytest.raises(NotFittedError, match="train-bundler"):
        engine.bundle(item="I00001")


# ------------------------------------------------------------------------------ CLI


def test_cli_train_bundler_and_bundle(trained_artifact: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    model = Path(shutil.copytree(trained_artifact, tmp_path / "model"))
    result = runner.invoke(app, ["bundle", "--model", str(model), "--item", "I00001"])
    assert result.exit_code == 1 and "train-bundler" in result.output
    result = runner.invoke(app, ["train-bundler", "--model", str(model), "--data", str(small_demo_dir), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "validation AUC" in result.output
    retriever = Retriever.load(model)
    anchor = next(i for i, ok in zip(retriever.catalog.item_ids, retriever.in_stock, strict=True) if ok)
    result = runner.invoke(app, ["bundle", "--model", str(model), "--item", anchor, "--size", "2-3", "--n", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["bundles"] and all(anchor in [i["item_id"] for i in b["items"]] for b in payload["bundles"])
    result = runner.invoke(app, ["bundle", "--model", str(model), "--user", "U0001", "--budget", "0.01"])
    assert result.exit_code == 0 and "no bundle" in result.output
    result = runner.invoke(app, ["bundle", "--model", str(model), "--user", "U0001", "--curated", "--n", "2"])
    assert result.exit_code == 0, result.output
    for args, code in ((["--item", "NOPE"], 3), (["--item", anchor, "--size", "4-2"], 2), ([], 2)):
        result = runner.invoke(app, ["bundle", "--model", str(model), *args])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
