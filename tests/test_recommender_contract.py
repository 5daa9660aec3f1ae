"""The Recommender contract, run against EVERY registered recommender (implicit's pattern: one test
class, parametrised over the models): the baselines and the adapters of the engine's stages alike.

Each is built on the small demo shop (the adapters around the session's trained towers and ranking
pipeline, so nothing trains here) and must: fit on no events (clear error or popularity), follow
its unknown-user policy, ignore events for items outside the catalog, give the same lists on two
fits, and either round-trip save/load exactly or refuse to save with a clear `RecsError` (and
refuse to load such a folder just as clearly).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from recs.errors import ArtifactError, RecsError, UnknownUserError
from recs.evaluation import (
    CandidatesRecommender,
    EngineRecommender,
    RankerRecommender,
    RecommendationLists,
    Recommender,
    TwoTowerRecommender,
    ZeroShotRecommender,
    make_baseline,
    registered_recommenders,
)
from recs.ranking.pipeline import RankingPipeline
from recs.retrieval.config import RetrievalConfig
from recs.retrieval.retriever import Retriever
from recs.retrieval.towers import TowerConfig

K = 5
# Small but exercised parameters: the contract, not the quality, is under test.
FAST_PARAMS: dict[str, dict[str, Any]] = {"als": {"factors": 8, "iterations": 5, "num_threads": 1}}


@dataclass
class Shop:
    events: pl.DataFrame
    items: pl.DataFrame
    retriever: Retriever
    pipeline: RankingPipeline
    model_dir: Path

    @property
    def catalog(self) -> set[str]:
        return set(self.items["item_id"].to_list())

    def known_users(self, n: int = 4) -> list[str]:
        buyers = self.events.filter(pl.col("event") == "purchase")["user_id"].unique().sort()
        return buyers.head(n).to_list()


@pytest.fixture(scope="module")
def shop(small_demo_dir: Path, trained_artifact: Path, ranked_artifact: Path, tiny_model_dir: Path) -> Shop:
    from recs.data import load_dataset
    from recs.serving.engine import Engine

    dataset, _ = load_dataset(small_demo_dir)
    return Shop(
        events=dataset.events,
        items=dataset.items,
        retriever=Retriever.load(trained_artifact),
        pipeline=Engine.load(ranked_artifact).pipeline,
        model_dir=tiny_model_dir,
    )


def _baseline(name: str) -> Callable[[Shop, str], Recommender]:
    return lambda shop, policy: make_baseline(name, **FAST_PARAMS.get(name, {}), unknown_user=policy)


# One builder per registered name: a new recommender must be added here (see the coverage test).
BUILDERS: dict[str, Callable[[Shop, str], Recommender]] = {
    **{name: _baseline(name) for name in ("popularity", "repeat", "cooc", "als", "bm25", "tifu_knn", "upcf")},
    "two_tower": lambda shop, policy: TwoTowerRecommender(retriever=shop.retriever, unknown_user=policy),
    "candidates": lambda shop, policy: CandidatesRecommender(retriever=shop.retriever, unknown_user=policy),
    # No retriever given: `fit` builds the untuned backbone's retriever itself.
    "zero_shot": lambda shop, policy: ZeroShotRecommender(
        config=RetrievalConfig(towers=TowerConfig(model=str(shop.model_dir))), unknown_user=policy
    ),
    "ranker": lambda shop, policy: RankerRecommender(shop.pipeline, unknown_user=policy),
    "engine": lambda shop, policy: EngineRecommender(shop.pipeline, rerank_top=5, unknown_user=policy),
}


def test_every_registered_recommender_is_under_contract() -> None:
    assert set(BUILDERS) == set(registered_recommenders())
    for name, cls in registered_recommenders().items():
        assert cls.name == name and issubclass(cls, Recommender)


def _check_lists(recs: RecommendationLists, catalog: set[str], k: int) -> None:
    assert isinstance(recs, RecommendationLists)
    for user, items, scores in zip(recs.user_ids, recs.item_ids, recs.scores, strict=True):
        assert len(items) == len(scores) == min(k, len(catalog)), f"short list for {user}"
        assert len(set(items)) == len(items), "duplicates"
        assert set(items) <= catalog, "non-catalog item"
        assert scores.dtype == np.float32 and np.isfinite(scores).all()
        assert (np.diff(scores) <= 0).all(), f"scores not descending for {user}: {scores}"


def _same(a: RecommendationLists, b: RecommendationLists) -> None:
    assert a.user_ids == b.user_ids
    assert a.item_ids == b.item_ids
    for sa, sb in zip(a.scores, b.scores, strict=True):
        np.testing.assert_array_equal(sa, sb)


@pytest.mark.parametrize("name", sorted(BUILDERS))
class TestRecommenderContract:
    @pytest.fixture()
    def build(self, name: str, shop: Shop) -> Callable[..., Recommender]:
        def make(unknown_user: str = "fallback") -> Recommender:
            model = BUILDERS[name](shop, unknown_user)
            assert model.name == name and not model.fitted
            return model

        return make

    @pytest.fixture()
    def fitted(self, build: Callable[..., Recommender], shop: Shop) -> Recommender:
        return build().fit(shop.events, shop.items)

    def test_fit_returns_self_and_full_lists(self, build: Callable[..., Recommender], shop: Shop) -> None:
        model = build()
        assert model.fit(shop.events, shop.items) is model and model.fitted
        users = shop.known_users()
        recs = model.recommend(users, k=K)
        assert recs.user_ids == users
        _check_lists(recs, shop.catalog, K)
        assert model.recommend([], k=K).item_ids == []

    def test_empty_input(self, build: Callable[..., Recommender], shop: Shop) -> None:
        """No events at all: a clear error, or every user served by (empty) popularity."""
        try:
            model = build().fit(shop.events.clear(), shop.items)
        except RecsError:
            return
        recs = model.recommend(shop.known_users(2), k=K)
        _check_lists(recs, shop.catalog, K)
        assert recs.item_ids[0] == recs.item_ids[1], "with no events every user is a stranger"
        strict = build(unknown_user="raise").fit(shop.events.clear(), shop.items)
        with pytest.raises(UnknownUserError):
            strict.recommend(shop.known_users(1), k=K)

    def test_unknown_users_follow_the_policy(self, build: Callable[..., Recommender], shop: Shop) -> None:
        known = shop.known_users(1)
        strict = build(unknown_user="raise").fit(shop.events, shop.items)
        with pytest.raises(UnknownUserError, match="nobody"):
            strict.recommend([*known, "nobody"], k=K)
        _check_lists(strict.recommend(known, k=K), shop.catalog, K)

        warn = build(unknown_user="warn").fit(shop.events, shop.items)
        with pytest.warns(UserWarning, match="unknown user"):
            warned = warn.recommend(["nobody", *known], k=K)
        fallback = build(unknown_user="fallback").fit(shop.events, shop.items)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            served = fallback.recommend(["nobody", "", *known], k=K)
        _check_lists(served, shop.catalog, K)
        # Strangers get the popularity list, whatever the model and the policy.
        popular = make_baseline("popularity").fit(shop.events, shop.items).recommend(["nobody"], k=K)
        assert served.item_ids[0] == served.item_ids[1] == warned.item_ids[0] == popular.item_ids[0]

    def test_unknown_items_are_ignored(self, build: Callable[..., Recommender], shop: Shop) -> None:
        """Events for items outside the catalog change nothing and never come back."""
        users = shop.known_users()
        stray = shop.events.filter(pl.col("user_id").is_in(users)).head(3).with_columns(
            pl.lit("no-such-item").alias("item_id"), pl.lit("purchase").alias("event")
        )
        noisy = build().fit(pl.concat([shop.events, stray]), shop.items).recommend(users, k=K)
        _check_lists(noisy, shop.catalog, K)
        _same(noisy, build().fit(shop.events, shop.items).recommend(users, k=K))

    def test_deterministic(self, build: Callable[..., Recommender], shop: Shop) -> None:
        users = [*shop.known_users(), "nobody"]
        one = build().fit(shop.events, shop.items)
        two = build().fit(shop.events, shop.items)
        _same(one.recommend(users, k=K), two.recommend(users, k=K))
        _same(one.recommend(users, k=K, exclude_bought=True), two.recommend(users, k=K, exclude_bought=True))

    def test_save_load_round_trip_or_clear_refusal(self, fitted: Recommender, shop: Shop, tmp_path: Path) -> None:
        users = [*shop.known_users(), "nobody"]
        before = fitted.recommend(users, k=K)
        folder = tmp_path / fitted.name
        try:
            fitted.save(folder)
        except RecsError as e:
            # Refused: clearly, naming the model, and leaving nothing behind.
            assert isinstance(e, ArtifactError) and fitted.name in str(e)
            assert not folder.exists() and list(tmp_path.iterdir()) == []
            _check_load_refuses(fitted.name, shop, tmp_path)
            return
        for loader in (Recommender.load, type(fitted).load):
            loaded = loader(folder)
            assert type(loaded) is type(fitted) and loaded.fitted
            assert loaded.get_params() == fitted.get_params()
            _same(loaded.recommend(users, k=K), before)
            _same(loaded.recommend(users, k=K, exclude_bought=True), fitted.recommend(users, k=K, exclude_bought=True))


def _check_load_refuses(name: str, shop: Shop, tmp_path: Path) -> None:
    """A folder that claims to hold a model which cannot be saved (a hand-made one, or one written
    by an older recs that let it through) is refused on load, not served half-built."""
    folder = make_baseline("popularity").fit(shop.events, shop.items).save(tmp_path / "claims")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "class": name}))
    for loader in (Recommender.load, registered_recommenders()[name].load):
        with pytest.raises(ArtifactError, match="cannot be loaded"):
            loader(folder)
