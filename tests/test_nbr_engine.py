"""The engine's next-basket parts: TIFU-KNN core, the knn candidate source, ALS tuned on a held-out
basket, the text similarity features, held-out ranker features and paired comparisons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from recs.errors import ConfigError
from recs.evaluation.paired import format_paired, paired_difference
from recs.retrieval.candidates import CandidateConfig, UserHistory, generate_candidates
from recs.retrieval.tifu import TifuConfig, TifuModel, knn_mean, normalise_rows, tifu_vectors


def test_tifu_vectors_group_and_decay_as_the_paper() -> None:
    # User 0: baskets at t=1 {0, 1}, t=2 {0}, t=3 {2}; groups of 2 from the most recent basket:
    # group 0 = t3 (weight 1), t2 (0.5); group 1 = t1 alone, group weight 0.5; 2 groups.
    m = tifu_vectors(np.array([0, 0, 0, 0]), np.array([0, 1, 0, 2]), np.array([1, 1, 2, 3]), 1, 3,
                     group_size=2, within_decay=0.5, group_decay=0.5)
    expected = np.array([0.5 / 4 + 0.5 / 2, 0.5 / 2, 1.0 / 4])
    np.testing.assert_allclose(m.toarray()[0], expected, rtol=1e-6)


def test_tifu_vectors_count_an_item_once_per_basket() -> None:
    once = tifu_vectors(np.array([0]), np.array([0]), np.array([5]), 1, 1, 3, 0.9, 0.7)
    twice = tifu_vectors(np.array([0, 0]), np.array([0, 0]), np.array([5, 5]), 1, 1, 3, 0.9, 0.7)
    np.testing.assert_allclose(once.toarray(), twice.toarray())


def test_knn_mean_never_picks_the_user_and_ignores_dissimilar_users() -> None:
    import scipy.sparse as sp

    stored = sp.csr_matrix(np.array([[1.0, 0, 0], [1.0, 1.0, 0], [0, 0, 1.0]], dtype=np.float32))
    out = knn_mean(stored, stored, normalise_rows(stored), k=1, exclude=np.array([0, 1, 2]))
    np.testing.assert_allclose(out[0], [1.0, 1.0, 0])  # user 0's nearest other user is 1
    np.testing.assert_allclose(out[1], [1.0, 0, 0])
    np.testing.assert_allclose(out[2], [0, 0, 0])  # nobody shares an item with user 2


def _events(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame({
        "user_id": [u for u, _, _ in rows], "item_id": [i for _, i, _ in rows],
        "timestamp": [start + timedelta(days=d) for _, _, d in rows], "event": ["purchase"] * len(rows),
    })


def test_tifu_model_scores_a_history_and_round_trips() -> None:
    row_of = {"a": 0, "b": 1, "c": 2}
    events = _events([("u1", "a", 0), ("u1", "b", 0), ("u2", "a", 0), ("u2", "c", 1)])
    model = TifuModel.fit(events, row_of, 3, TifuConfig(neighbours=1))
    own, neighbours = model.scores("u1", np.array([0]), np.array([0.0]))
    assert own[0] > 0 and own[1] == 0
    assert neighbours[2] > 0  # u2 (the only other user) bought c
    again = TifuModel.from_files(model.arrays().__getitem__, 3, model.config)
    np.testing.assert_array_equal(again.vectors.toarray(), model.vectors.toarray())


def test_knn_source_and_tifu_features_in_the_candidates() -> None:
    own = np.array([0.0, 0.5, 0.0, 0.0], dtype=np.float32)
    neighbours = np.array([0.0, 0.1, 0.4, 0.0], dtype=np.float32)
    cands = generate_candidates(
        two_tower_rows=np.zeros(0, np.int64), two_tower_scores_all=np.zeros(4, np.float32),
        history=UserHistory(np.array([1]), np.array([0.0])), now=0.0,
        neighbour_rows=np.full((4, 1), -1, np.int32), neighbour_scores=np.zeros((4, 1), np.float32),
        popularity=np.ones(4), popular_rows=np.zeros(0, np.int64), config=CandidateConfig(n_popularity=0),
        tifu_all=(own, neighbours),
    )
    feats = {name: dict(zip(cands.item_rows.tolist(), v.tolist(), strict=True)) for name, v in cands.features.items()}
    assert {r for r, v in feats["from_knn"].items() if v} == {1, 2}  # item 3 scores 0: not found
    assert feats["tifu_neighbours"][2] == pytest.approx(0.4)
    assert feats["tifu_score"][1] == pytest.approx(0.7 * 0.5 + 0.3 * 0.1)


def test_tune_factors_searches_the_stages_and_keeps_the_best() -> None:
    from recs.retrieval.als import ALS_SEARCH
    from recs.retrieval.factors import tune_factors

    rows = [(f"u{u}", item, 0) for u in range(12) for item in "ab" if (u, item) != (0, "b")]
    rows += [(f"u{u}", item, 0) for u in range(12, 24) for item in "cd"]
    targets = pl.DataFrame({"user_id": ["u0"], "item_id": ["b"]})
    start = {"factors": 4, "regularization": 0.1, "alpha": 1.0, "weighting": "log", "iterations": 5}
    best, trials = tune_factors(_events(rows), targets, {k: i for i, k in enumerate("abcde")}, 5, start)
    n_first = len(ALS_SEARCH[0]["weighting"]) * len(ALS_SEARCH[0]["regularization"])
    assert n_first <= len(trials) <= n_first + sum(len(next(iter(s.values()))) for s in ALS_SEARCH[1:])
    assert len({tuple(sorted(t["params"].items())) for t in trials}) == len(trials)  # no refit
    assert best == max(trials, key=lambda t: t["ndcg@10"])["params"]


def test_ignored_features_are_checked_and_never_used() -> None:
    from recs.ranking.config import RankerConfig
    from recs.ranking.ranker import LearnedRanker

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    groups = np.full(20, 20)
    with pytest.raises(ConfigError, match="unknown feature"):
        LearnedRanker(("a", "b"), RankerConfig(ignored_features=("zzz",))).fit(x, y, groups)
    ranker = LearnedRanker(("a", "b"), RankerConfig(ignored_features=("a",), min_data_in_leaf=5)).fit(x, y, groups)
    assert ranker.feature_importance()["a"] == 0.0


def test_paired_difference_is_the_mean_per_user_difference_with_its_interval() -> None:
    a = {"u1": 0.5, "u2": 0.7, "u3": 0.9, "only_a": 1.0}
    b = {"u1": 0.4, "u2": 0.5, "u3": 0.6, "only_b": 0.0}
    result = paired_difference(a, b)
    assert result["users"] == 3
    diff = np.array([0.1, 0.2, 0.3])
    half = 1.959964 * diff.std(ddof=1) / np.sqrt(3)
    assert result["delta"] == pytest.approx(0.2)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((0.2 - half, 0.2 + half))
    assert result["ratio"] == pytest.approx(0.7 / 0.5)
    assert "95% CI" in format_paired("x", "y", result)
    assert paired_difference({}, b)["users"] == 0


def test_evaluate_fills_per_user_ndcg() -> None:
    from recs.data.splits import leave_last_out
    from recs.evaluation.baselines import RepeatRecommender
    from recs.evaluation.protocol import evaluate

    rows = [("u1", "a", 0), ("u1", "a", 1), ("u1", "a", 2), ("u2", "b", 0), ("u2", "c", 1), ("u2", "b", 2)]
    events = _events(rows).with_columns(pl.concat_str("user_id", pl.col("timestamp").dt.day().cast(pl.Utf8)).alias("basket_id"))
    items = pl.DataFrame({"item_id": ["a", "b", "c"]})
    split = leave_last_out(events, items["item_id"], min_train_baskets=1)
    model = RepeatRecommender().fit(split.fit_events, items)
    per_user: dict[str, dict[str, float]] = {}
    metrics = evaluate(model, split, items, ks=(10,), slices=("all",), per_user=per_user)
    assert set(per_user["all"]) == set(split.test["user_id"].to_list())
    assert np.mean(list(per_user["all"].values())) == pytest.approx(metrics["all"]["ndcg@10"])
