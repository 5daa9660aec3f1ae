"""The next-basket baselines `tifu_knn` and `upcf` on hand-computed examples (the Recommender
contract itself runs in test_baselines.py and test_recommender_contract.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from recs.errors import ConfigError
from recs.evaluation import Recommender, make_baseline

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CATALOG = ["a", "b", "c", "d", "e"]


def _events(baskets: list[tuple[str, str, float, str]]) -> pl.DataFrame:
    """(user, basket id, day, items as letters) -> purchase events."""
    return pl.DataFrame(
        [
            {"user_id": u, "item_id": i, "timestamp": T0 + timedelta(days=day), "event": "purchase", "basket_id": b}
            for u, b, day, basket in baskets
            for i in basket
        ]
    )


def _items() -> pl.DataFrame:
    return pl.DataFrame({"item_id": CATALOG})


def _scored(model: Recommender, user: str) -> dict[str, float]:
    """The items the model has an opinion on for `user` (score > 0), with their scores."""
    recs = model.recommend([user], k=len(CATALOG))
    return {i: float(s) for i, s in zip(recs.item_ids[0], recs.scores[0], strict=True) if s > 0}


# ---------------------------------------------------------------------------------------------
# tifu_knn


def test_tifu_own_vector_groups_and_decays() -> None:
    # Baskets oldest -> newest: {a}, {a, b}, {c}, {a}. Groups of 2 from the newest back:
    # g0 = [{a} p0, {c} p1], g1 = [{a, b} p0, {a} p1]; each basket / (group size 2 * 2 groups).
    events = _events([("u", "1", 0, "a"), ("u", "2", 1, "ab"), ("u", "3", 2, "c"), ("u", "4", 3, "a")])
    model = make_baseline("tifu_knn", group_size=2, within_decay=0.5, group_decay=0.5, alpha=1.0)
    scores = _scored(model.fit(events, _items()), "u")
    # a: g0 p0 (1/4) + g1 p0 (0.5/4) + g1 p1 (0.5 * 0.5/4); b: g1 p0; c: g0 p1 (0.5/4).
    assert scores == pytest.approx({"a": 0.25 + 0.125 + 0.0625, "b": 0.125, "c": 0.125})


def test_tifu_baskets_at_one_instant_stay_two_baskets() -> None:
    # Same time, two basket ids: ordered by id, so "y" is the most recent one.
    events = _events([("u", "x", 0, "a"), ("u", "y", 0, "b")])
    model = make_baseline("tifu_knn", within_decay=0.5, alpha=1.0).fit(events, _items())
    assert _scored(model, "u") == pytest.approx({"b": 0.5, "a": 0.25})


def test_tifu_blends_the_nearest_neighbours() -> None:
    # u1 {a}; u2 {a, b}: cosine 1/sqrt(2); u3 {c}: cosine 0, never a neighbour.
    events = _events([("u1", "1", 0, "a"), ("u2", "2", 0, "ab"), ("u3", "3", 0, "c")])
    one = make_baseline("tifu_knn", neighbours=1, alpha=0.5).fit(events, _items())
    assert _scored(one, "u1") == pytest.approx({"a": 0.5 * 1 + 0.5 * 1, "b": 0.5 * 1})
    # k = 2: the mean is over k, and u3 (similarity 0) adds nothing to it.
    two = make_baseline("tifu_knn", neighbours=2, alpha=0.5).fit(events, _items())
    assert _scored(two, "u1") == pytest.approx({"a": 0.5 + 0.5 * 0.5, "b": 0.5 * 0.5})
    # A user is never their own neighbour: u3 shares nothing, so only their own vector is left.
    assert _scored(two, "u3") == pytest.approx({"c": 0.5})
    # Items nobody similar bought are filled by popularity, after the scored ones.
    assert one.recommend(["u1"], k=5).item_ids[0][:2] == ["a", "b"]


def test_tifu_rejects_bad_params() -> None:
    with pytest.raises(ConfigError, match="group_size"):
        make_baseline("tifu_knn", group_size=0)
    with pytest.raises(ConfigError, match="alpha"):
        make_baseline("tifu_knn", alpha=1.5)


# ---------------------------------------------------------------------------------------------
# upcf

# u1: {a}, {a, b}, {c} (oldest -> newest), items {a, b, c}; u2: {a, d}; u3: {e}; u4: {b}.
UPCF_BASKETS = [
    ("u1", "1", 0, "a"), ("u1", "2", 1, "ab"), ("u1", "3", 2, "c"),
    ("u2", "4", 0, "ad"), ("u3", "5", 0, "e"), ("u4", "6", 1, "b"),
]


def _upcf(**params: object) -> Recommender:
    return make_baseline("upcf", **params).fit(_events(UPCF_BASKETS), _items())


def test_upcf_recency_window() -> None:
    # alpha = 1: w(u4, u1) = |{b}| / |I_u4| = 1, the same weight as u4's own; u2 and u3 share
    # nothing with u4. So u4's scores are their own p_r plus u1's.
    last_two = _scored(_upcf(recency=2, alpha=1.0, q=1.0), "u4")
    assert last_two == pytest.approx({"b": 1 + 1 / 2, "a": 1 / 2, "c": 1 / 2})
    last_one = _scored(_upcf(recency=1, alpha=1.0, q=1.0), "u4")
    assert last_one == pytest.approx({"b": 1.0, "c": 1.0})
    every = _scored(_upcf(recency=0, alpha=1.0, q=1.0), "u4")
    assert every == pytest.approx({"b": 1 + 1 / 3, "a": 2 / 3, "c": 1 / 3})
    assert _upcf(recency=None).get_params()["recency"] == 0


def test_upcf_asymmetric_cosine_and_q() -> None:
    # w(u1, u2) = 1 / (3 ** alpha * 2 ** (1 - alpha)); w(u1, u4) = 1 / 3 ** alpha; own p_2 = 1/2.
    w2, w4 = 1 / math.sqrt(6), 1 / math.sqrt(3)
    scores = _scored(_upcf(recency=2, alpha=0.5, q=1.0), "u1")
    assert scores == pytest.approx({"a": 0.5 + w2, "b": 0.5 + w4, "c": 0.5, "d": w2})
    # alpha = 1 weighs by the user's own item count only; q sharpens the weights.
    scores = _scored(_upcf(recency=2, alpha=1.0, q=2.0), "u1")
    assert scores == pytest.approx({"a": 0.5 + 1 / 9, "b": 0.5 + 1 / 9, "c": 0.5, "d": 1 / 9})
    # The other way round the similarity is not the same: w(u2, u1) = 1 / |I_u2| = 1/2.
    scores = _scored(_upcf(recency=2, alpha=1.0, q=1.0), "u2")
    assert scores == pytest.approx({"a": 1 + 0.5 * 0.5, "d": 1.0, "b": 0.25, "c": 0.25})


def test_upcf_neighbours_keeps_the_most_similar() -> None:
    # u4 (w 1/sqrt(3)) is closer to u1 than u2 (w 1/sqrt(6)): with one neighbour, d is gone.
    scores = _scored(_upcf(recency=2, alpha=0.5, q=1.0, neighbours=1), "u1")
    assert scores == pytest.approx({"a": 0.5, "b": 0.5 + 1 / math.sqrt(3), "c": 0.5})
    assert _scored(_upcf(neighbours=10), "u1") == _scored(_upcf(), "u1")


def test_upcf_blocks_match_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    import recs.evaluation.baselines.upcf as upcf

    model = _upcf(recency=2, alpha=0.5, q=2.0)
    users = np.arange(4)
    whole = model._score(users)
    monkeypatch.setattr(upcf, "_SIM_BLOCK", 4)  # one query user per block
    np.testing.assert_array_equal(model._score(users), whole)


def test_upcf_rejects_bad_params() -> None:
    for bad in ({"recency": -1}, {"alpha": 2.0}, {"q": 0.0}, {"neighbours": 0}, {"recency": 1.5}):
        with pytest.raises(ConfigError, match="upcf"):
            make_baseline("upcf", **bad)
