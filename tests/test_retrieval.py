"""Two-tower retrieval: losses, towers, training, candidates, the retriever contract and artifacts."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recs.data import leave_last_out, load_dataset
from recs.errors import ArtifactError, UnknownItemError, UnknownUserError
from recs.retrieval.candidates import FEATURES, CandidateConfig, UserHistory, generate_candidates
from recs.retrieval.filters import Filters
from recs.retrieval.history import history_weights
from recs.retrieval.losses import in_batch_softmax_loss, pointwise_bce_loss
from recs.retrieval.retriever import Retriever
from recs.serving import Engine


@pytest.fixture()
def artifact(trained_artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_artifact, tmp_path / "model"))


@pytest.fixture(scope="module")
def retriever(trained_artifact: Path) -> Retriever:
    return Retriever.load(trained_artifact)


def test_infonce_masks_accidental_hits() -> None:
    users = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    items = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    ids = torch.tensor([0, 1, 1, 2])
    loss = in_batch_softmax_loss(users, items, ids, temperature=0.1)
    assert torch.isfinite(loss)
    # A duplicate of the positive must not act as a negative: making the duplicate's column
    # huge for row 1 leaves row 1's loss unchanged.
    boosted = items.clone()
    boosted[2] = users[1] * 1.0
    masked = in_batch_softmax_loss(users[1:3], boosted[1:3], ids[1:3], temperature=0.1)
    assert torch.isfinite(masked)


def test_logq_lowers_the_score_of_a_popular_item() -> None:
    """With logQ, a popular item's logit is reduced by its log sampling probability."""
    torch.manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    items = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    ids = torch.tensor([0, 1, 2])
    popular = torch.log(torch.tensor([0.9, 0.05, 0.05]))
    uniform = torch.log(torch.tensor([1 / 3, 1 / 3, 1 / 3]))
    logits_pop = users @ items.T / 0.1 - popular.unsqueeze(0)
    logits_uni = users @ items.T / 0.1 - uniform.unsqueeze(0)
    # The popular item (column 0) gains less than the rare ones: relative score lowered.
    assert (logits_pop[:, 0] - logits_pop[:, 1]).mean() < (logits_uni[:, 0] - logits_uni[:, 1]).mean()
    assert in_batch_softmax_loss(users, items, ids, 0.1, item_log_q=popular) != in_batch_softmax_loss(users, items, ids, 0.1)


def test_bce_loss_prefers_right_labels() -> None:
    u = torch.nn.functional.normalize(torch.ones(2, 4), dim=-1)
    good = pointwise_bce_loss(u, u, torch.tensor([1.0, 1.0]))
    bad = pointwise_bce_loss(u, u, torch.tensor([0.0, 0.0]))
    assert good < bad


def test_loss_falls_on_tiny_fixture(tiny_model_dir: Path) -> None:
    from recs.encoders import load_backbone, load_tokenizer
    from recs.retrieval.encode import tokenize
    from recs.retrieval.towers import TowerConfig, TwoTowerModel

    torch.manual_seed(0)
    model = TwoTowerModel(load_backbone(tiny_model_dir), TowerConfig(model=str(tiny_model_dir), user_input="text"))
    tokenizer = load_tokenizer(tiny_model_dir)
    users = ["purchase: tent ; view: lantern", "purchase: coffee beans", "purchase: phone", "purchase: dog food"]
    items = ["sleeping bag | camping", "coffee mug | kitchen", "phone case | electronics", "dog bowl | pets"]
    ub, ib = tokenize(tokenizer, users, 32), tokenize(tokenizer, items, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = in_batch_softmax_loss(model.encode_users(**ub), model.encode_items(**ib), torch.arange(4), 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.5


def test_history_weights_favour_recent() -> None:
    weights = history_weights(4, half_life=1.0)
    assert weights.sum() == pytest.approx(1.0)
    assert list(weights) == sorted(weights)


def test_candidates_keep_every_sources_features() -> None:
    n = 6
    neighbour_rows = np.full((n, 2), -1, dtype=np.int32)
    neighbour_scores = np.zeros((n, 2), dtype=np.float32)
    neighbour_rows[0] = [3, -1]
    neighbour_scores[0] = [0.8, 0.0]
    history = UserHistory(np.array([0, 0, 1]), np.array([0.0, 86400.0 * 10, 86400.0 * 20]))
    cands = generate_candidates(
        two_tower_rows=np.array([2, 0]),
        two_tower_scores_all=np.linspace(0, 1, n).astype(np.float32),
        history=history,
        now=86400.0 * 30,
        neighbour_rows=neighbour_rows,
        neighbour_scores=neighbour_scores,
        popularity=np.array([5, 1, 1, 1, 1, 9.0]),
        popular_rows=np.array([5, 0]),
        config=CandidateConfig(n_popularity=1),
    )
    rows = cands.item_rows.tolist()
    assert set(rows) == {0, 1, 2, 3, 5}
    feats = {name: dict(zip(rows, values.tolist(), strict=True)) for name, values in cands.features.items()}
    assert set(cands.features) == set(FEATURES)
    assert feats["times_bought"][0] == 2 and feats["rebuy_interval_days"][0] == pytest.approx(10.0)
    assert feats["days_since_bought"][0] == pytest.approx(20.0)
    assert feats["from_two_tower"][0] == 1 and feats["from_history"][0] == 1  # found by both
    assert feats["cooc_score"][3] > 0 and feats["from_cooc"][3] == 1
    assert feats["from_popularity"][5] == 1 and feats["two_tower_score"][5] == pytest.approx(1.0)
    assert all(np.isfinite(v).all() for v in cands.features.values())
    assert cands.cooc_source[rows.index(3)] == 0
    # history_first: bought items lead in habit order (0 bought twice, then 1), then RRF.
    assert [int(cands.item_rows[i]) for i in cands.order()[:2]] == [0, 1]


def test_buy_again_features_count_baskets() -> None:
    from recs.retrieval.candidates import NEVER_BASKETS, RECENT_HALF_LIFE, history_features

    day = 86400.0
    # Baskets at days 0, 10 (two lines), 20: item 0 in baskets 0 and 10, item 1 in 10 and 20.
    history = UserHistory(np.array([0, 0, 1, 1]), np.array([0.0, 10 * day, 10 * day, 20 * day]))
    habits = history_features(history, now=30 * day)
    assert habits[0].times == 2 and habits[0].baskets_since == 1 and habits[1].baskets_since == 0
    assert habits[0].basket_share == pytest.approx(2 / 3) and habits[1].basket_share == pytest.approx(2 / 3)
    assert habits[0].recent_buys == pytest.approx(0.5 ** (1 / RECENT_HALF_LIFE) + 0.5 ** (2 / RECENT_HALF_LIFE))
    assert habits[1].recent_buys == pytest.approx(1 + 0.5 ** (1 / RECENT_HALF_LIFE))
    cands = generate_candidates(
        two_tower_rows=np.array([2]), two_tower_scores_all=np.zeros(3, dtype=np.float32), history=history,
        now=30 * day, neighbour_rows=np.full((3, 1), -1, dtype=np.int32), neighbour_scores=np.zeros((3, 1), dtype=np.float32),
        popularity=np.ones(3), popular_rows=np.array([0]), config=CandidateConfig(n_popularity=0),
        rebuy_rate=np.array([0.5, 0.25, 0.0], dtype=np.float32),
    )
    feats = {name: dict(zip(cands.item_rows.tolist(), v.tolist(), strict=True)) for name, v in cands.features.items()}
    assert feats["baskets_since_bought"] == {0: 1.0, 1: 0.0, 2: NEVER_BASKETS}
    assert feats["item_rebuy_rate"] == {0: 0.5, 1: 0.25, 2: 0.0} and feats["basket_share"][2] == 0.0


def test_item_rebuy_rate_counts_buyers_who_came_back() -> None:
    from datetime import UTC, datetime

    from recs.retrieval.statistics import item_rebuy_rate

    t = [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3)]
    purchases = pl.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u2"], "item_id": ["a", "a", "a", "b", "b"],
                              "timestamp": [t[0], t[1], t[0], t[0], t[0]]})  # u2 bought b twice in one basket
    rate = item_rebuy_rate(purchases, {"a": 0, "b": 1, "c": 2}, 3, shrink=1.0)
    assert rate.tolist() == pytest.approx([1 / 3, 0.0, 0.0])


def test_als_source_adds_new_items_and_scores_every_candidate() -> None:
    history = UserHistory(np.array([0]), np.array([0.0]))
    als = np.array([9.0, 0.1, 0.5, 3.0, 2.0], dtype=np.float32)  # row 0 is bought: not from ALS
    cands = generate_candidates(
        two_tower_rows=np.array([1]), two_tower_scores_all=np.zeros(5, dtype=np.float32), history=history, now=0.0,
        neighbour_rows=np.full((5, 1), -1, dtype=np.int32), neighbour_scores=np.zeros((5, 1), dtype=np.float32),
        popularity=np.ones(5), popular_rows=np.array([0]), config=CandidateConfig(n_popularity=0, n_als=2),
        als_scores_all=als,
    )
    feats = {name: dict(zip(cands.item_rows.tolist(), v.tolist(), strict=True)) for name, v in cands.features.items()}
    assert {r for r, v in feats["from_als"].items() if v} == {3, 4}
    assert feats["als_score"] == pytest.approx({0: 9.0, 1: 0.1, 3: 3.0, 4: 2.0})


def test_fit_factors_learns_who_buys_alike() -> None:
    from datetime import UTC, datetime

    from recs.retrieval.factors import UserItemFactors, fit_factors

    # Two tastes: users 0-9 buy items a, b; users 10-19 buy c, d. u0 never bought b.
    rows = [(f"u{u}", item) for u in range(10) for item in "ab" if (u, item) != (0, "b")]
    rows += [(f"u{u}", item) for u in range(10, 20) for item in "cd"]
    events = pl.DataFrame({"user_id": [u for u, _ in rows], "item_id": [i for _, i in rows],
                           "event": ["purchase"] * len(rows), "timestamp": [datetime(2024, 1, 1, tzinfo=UTC)] * len(rows)})
    factors = fit_factors(events, {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}, 5, factors=4, iterations=10)
    scores = factors.scores("u0")
    assert scores is not None and np.isfinite(scores).all() and scores[1] > max(scores[2], scores[3])
    assert factors.scores("nobody") is None
    again = UserItemFactors.from_files(factors.arrays().__getitem__)
    np.testing.assert_array_equal(again.scores("u0"), scores)


def test_candidates_rrf_only_when_history_first_is_off() -> None:
    n = 4
    history = UserHistory(np.array([3]), np.array([0.0]))
    cands = generate_candidates(
        two_tower_rows=np.array([0, 1]), two_tower_scores_all=np.zeros(n, dtype=np.float32), history=history,
        now=86400.0, neighbour_rows=np.full((n, 1), -1, dtype=np.int32), neighbour_scores=np.zeros((n, 1), dtype=np.float32),
        popularity=np.ones(n), popular_rows=np.array([0]), config=CandidateConfig(history_first=False),
    )
    assert int(cands.item_rows[cands.order()[0]]) == 0  # two-tower #1 and popular #1: highest RRF sum


def test_retriever_recommends_known_and_new_users(retriever: Retriever) -> None:
    engine = Engine(retriever)
    user = retriever.events["user_id"][0]
    results = engine.recommend(user_id=user, k=5)
    assert len(results) == 5 and len({r.item_id for r in results}) == 5
    assert [r.rank for r in results] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(r.score) for r in results)
    by_history = engine.recommend(history=[retriever.catalog.item_ids[0]], k=3)
    assert len(by_history) == 3
    by_text = engine.recommend(text="tent for camping", k=3)
    assert len(by_text) == 3 and "two_tower" in by_text[0].source


def test_empty_history_and_unknown_user_policies(retriever: Retriever) -> None:
    engine = Engine(retriever)
    with pytest.raises(UnknownUserError):
        engine.recommend(user_id="nobody", unknown_user="raise")
    with pytest.warns(UserWarning):
        warned = engine.recommend(user_id="nobody", k=4, unknown_user="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fallback = engine.recommend(user_id="nobody", k=4, unknown_user="fallback")
    assert [r.item_id for r in warned] == [r.item_id for r in fallback]
    popular = [retriever.catalog.item_ids[i] for i in retriever.stats.popular_rows[:4]]
    assert [r.item_id for r in fallback] == popular
    with pytest.raises(UnknownItemError):
        engine.recommend(history=["no-such-item"])


def test_filters_honoured(retriever: Retriever) -> None:
    engine = Engine(retriever)
    user = retriever.events.filter(pl.col("event") == "purchase")["user_id"][0]
    bought = set(retriever.events.filter((pl.col("user_id") == user) & (pl.col("event") == "purchase"))["item_id"])
    results = engine.recommend(user_id=user, k=20, exclude_bought=True, in_stock=True)
    stock = dict(zip(retriever.items["item_id"], retriever.items["in_stock"], strict=True))
    assert results, "no in-stock, not-bought item recommended: the filter check would pass vacuously"
    assert not bought & {r.item_id for r in results}
    assert all(stock[r.item_id] for r in results)
    category = retriever.items["category"][0].split(" > ")[0]
    cats = dict(zip(retriever.items["item_id"], retriever.items["category"], strict=True))
    in_category = engine.recommend(user_id=user, k=10, category=category)
    assert in_category, f"nothing recommended in {category!r}: the filter check would pass vacuously"
    assert all(cats[r.item_id].startswith(category) for r in in_category)


def test_save_load_round_trip_gives_identical_rankings(retriever: Retriever, tmp_path: Path) -> None:
    users = retriever.events["user_id"].unique().sort().to_list()[:5]
    before = [[r.item_id for r in rs] for rs in Engine(retriever).recommend_batch(users, k=10)]
    retriever.save(tmp_path / "again")
    after = [[r.item_id for r in rs] for rs in Engine.load(tmp_path / "again").recommend_batch(users, k=10)]
    assert before == after


def test_artifact_corruption_is_refused_with_the_file_name(artifact: Path) -> None:
    (artifact / "item_vectors.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ArtifactError, match=r"item_vectors\.npy"):
        Engine.load(artifact)


def test_training_is_deterministic_under_a_seed(tiny_model_dir: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    from recs.retrieval.retriever import RetrievalConfig
    from recs.retrieval.towers import TowerConfig
    from recs.retrieval.trainer import TrainConfig

    dataset, _ = load_dataset(small_demo_dir)
    config = RetrievalConfig(
        towers=TowerConfig(model=str(tiny_model_dir)),
        train=TrainConfig(epochs=1, batch_size=16, max_pairs_per_epoch=64, valid_users=20, seed=3),
    )
    a = Retriever.fit(dataset.events, dataset.items, config, tmp_path / "a", show_progress=False)
    b = Retriever.fit(dataset.events, dataset.items, config, tmp_path / "b", show_progress=False)
    np.testing.assert_allclose(a.item_vectors, b.item_vectors, atol=1e-6)
    assert (tmp_path / "a" / "metrics.jsonl").is_file()


def test_training_resumes_from_checkpoint(tiny_model_dir: Path, small_demo_dir: Path, tmp_path: Path) -> None:
    from recs.data.text import render_items
    from recs.encoders import load_backbone, load_tokenizer
    from recs.retrieval.pairs import Catalog, build_examples, user_states
    from recs.retrieval.towers import TowerConfig, TwoTowerModel
    from recs.retrieval.trainer import TrainConfig, make_validation_set, train_towers

    dataset, _ = load_dataset(small_demo_dir)
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    catalog = Catalog.from_items(dataset.items, render_items)
    examples = build_examples(split.tune_events, catalog)
    valid = make_validation_set(user_states(split.tune_events, catalog), split.valid, catalog, 30, 0)
    config = TrainConfig(epochs=2, batch_size=16, max_pairs_per_epoch=48, patience=5)

    def model() -> TwoTowerModel:
        return TwoTowerModel(load_backbone(tiny_model_dir), TowerConfig(model=str(tiny_model_dir)))

    tokenizer = load_tokenizer(tiny_model_dir)
    first = train_towers(model(), tokenizer, catalog, examples, valid, config.model_copy(update={"epochs": 1}), tmp_path, show_progress=False)
    resumed = train_towers(model(), tokenizer, catalog, examples, valid, config, tmp_path, resume=True, show_progress=False)
    assert first.epochs_run == 1 and resumed.epochs_run == 2
    assert resumed.steps == 2 * first.steps
    lines = (tmp_path / "metrics.jsonl").read_text().strip().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]


def test_filters_dataclass_defaults() -> None:
    assert Filters() == Filters(category=None, in_stock_only=False, exclude_bought=False, exclude=())


def test_training_pairs_cut_at_session_start_and_skip_rebuys(shop_dir: Path) -> None:
    from recs.data.text import render_items
    from recs.retrieval.pairs import Catalog, build_examples

    dataset, _ = load_dataset(shop_dir)
    catalog = Catalog.from_items(dataset.items, render_items)
    every = build_examples(dataset.events, catalog)
    fresh = build_examples(dataset.events, catalog, new_items_only=True)
    c1 = catalog.row_of["C1"]
    # u1 re-buys C1 twice: those are positives of `every` but not of `fresh`.
    assert int((every.pair_item == c1).sum()) > int((fresh.pair_item == c1).sum())
    # u2 viewed T1 minutes before buying it: that view is not history for the o5 basket (no state).
    assert all("view: TrailPeak" not in s.text or "purchase" in s.text for s in every.states)


def test_two_tower_source_finds_only_items_new_to_the_user(retriever: Retriever) -> None:
    purchases = retriever.events.filter(pl.col("event") == "purchase")
    user = purchases.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])["user_id"][0]
    context = retriever.context(user_id=user)
    bought = set(np.unique(context.history.rows).tolist())
    assert bought
    cands = retriever.candidates(context, retriever.user_vectors([context.state])[0])
    found_by_towers = cands.item_rows[cands.features["from_two_tower"] == 1].tolist()
    assert found_by_towers and not bought & set(found_by_towers)
    assert bought <= set(cands.item_rows.tolist())  # re-buys still come, from the history source
