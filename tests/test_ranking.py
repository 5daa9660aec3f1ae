"""Ranking: learned ranker and cross-encoder contracts, pipeline options, explanations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recs.ranking.cross_encoder import (
    CrossEncoderConfig,
    CrossEncoderModel,
    CrossEncoderReranker,
    RerankQuery,
)
from recs.ranking.diversity import cap_per_category, mmr
from recs.ranking.features import RANKING_FEATURES
from recs.ranking.pipeline import RankOptions
from recs.ranking.ranker import LearnedRanker, RankerConfig
from recs.ranking.relation import relation_words
from recs.serving import Engine


@pytest.fixture(scope="module")
def engine(ranked_artifact: Path) -> Engine:
    return Engine.load(ranked_artifact)


def _user_with_purchases(engine: Engine) -> str:
    events = engine.retriever.events.filter(pl.col("event") == "purchase")
    counts = events.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])
    return counts["user_id"][0]


def _toy_ranking_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.full(60, 10)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    y = (x[:, 0] + 0.1 * rng.normal(size=600) > 1.0).astype(np.float32)
    return x, y, groups


def test_ranker_learns_save_load_identical_and_deterministic(tmp_path: Path) -> None:
    x, y, groups = _toy_ranking_data()
    config = RankerConfig(n_estimators=50, min_data_in_leaf=5)
    ranker = LearnedRanker(("a", "b", "c"), config).fit(x, y, groups)
    again = LearnedRanker(("a", "b", "c"), config).fit(x, y, groups)
    scores = ranker.predict(x)
    np.testing.assert_array_equal(scores, again.predict(x))
    assert np.corrcoef(scores, x[:, 0])[0, 1] > 0.5  # it found the informative feature
    assert scores[y == 1].mean() > scores[y == 0].mean()
    ranker.save(tmp_path)
    np.testing.assert_array_equal(LearnedRanker.load(tmp_path).predict(x), scores)
    assert ranker.predict(np.zeros((0, 3), dtype=np.float32)).shape == (0,)
    assert ranker.predict(x[:1]).shape == (1,)
    assert np.isfinite(scores).all()


def test_cross_encoder_residual_listwise_loss_falls(tiny_model_dir: Path, tmp_path: Path) -> None:
    from recs.encoders import load_backbone, load_tokenizer
    from recs.errors import ArtifactError

    torch.manual_seed(0)
    reranker = CrossEncoderReranker(
        CrossEncoderModel(load_backbone(tiny_model_dir)), load_tokenizer(tiny_model_dir),
        CrossEncoderConfig(epochs=1, queries_per_step=2, lr=5e-3, head_lr=5e-3, train_layers=None, max_tokens=32),
    )
    items = ["tent for camping", "coffee beans", "phone case", "dog food"]
    # The zero head starts as the ranker alone: a zero residual on every pair.
    np.testing.assert_array_equal(reranker.score("purchase: sleeping bag", items), np.zeros(4, dtype=np.float32))
    # The ranker's logits put the positive second: the residual must learn to lift it.
    base = np.array([0.5, 0.2, 0.0, -0.3], dtype=np.float32)
    queries = [RerankQuery(u, items, np.array([1.0 if i == j else 0.0 for i in range(4)]), np.roll(base, j + 1)) for j, u in
               enumerate(["purchase: sleeping bag", "purchase: coffee mug", "purchase: smartphone", "purchase: dog bowl"])] * 3
    with torch.no_grad():  # the loss is softmax cross-entropy of base + CE against the normalised labels
        q = queries[0]
        want = -torch.log_softmax(torch.as_tensor(q.base), 0)[0]
        assert reranker._listwise_loss([q], np.random.default_rng(0), "cpu").item() == pytest.approx(want.item(), rel=1e-5)
    rng = np.random.default_rng(0)
    optimizer = torch.optim.AdamW(reranker.model.parameters(), lr=5e-3)
    losses = []
    for _ in range(30):
        loss = reranker._listwise_loss(queries[:4], rng, "cpu")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) * 0.7
    reranker.model.eval()
    scores = reranker.score("purchase: sleeping bag", items)
    assert scores.shape == (4,) and np.isfinite(scores).all()
    assert reranker.score("x", []).shape == (0,)
    reranker.save(tmp_path)
    again = CrossEncoderReranker.load(tmp_path, reranker.tokenizer)
    np.testing.assert_allclose(again.score("purchase: sleeping bag", items), scores, atol=1e-5)
    # A cross-encoder of an older recs (combined by a second-stage ranker) is refused, not served.
    meta = json.loads((tmp_path / "cross_encoder.json").read_text())
    del meta["combination"]
    (tmp_path / "cross_encoder.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="train-ranker"):
        CrossEncoderReranker.load(tmp_path, reranker.tokenizer)


def test_cross_encoder_fit_starts_from_and_keeps_the_ranker_unless_beaten(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A tiny model trains on served lists; epoch 0 (zero residual) is the ranker's NDCG."""
    from recs.encoders import load_backbone, load_tokenizer
    from recs.ranking.cross_encoder import list_ndcg

    reranker = CrossEncoderReranker(
        CrossEncoderModel(load_backbone(tiny_model_dir)), load_tokenizer(tiny_model_dir),
        CrossEncoderConfig(epochs=1, queries_per_step=2, train_layers=None, max_tokens=32),
    )
    rng = np.random.default_rng(0)
    items = [f"item {i}" for i in range(12)]
    queries = []
    for j in range(20):
        labels = np.zeros(12)
        labels[rng.choice(12, 2, replace=False)] = 1.0
        queries.append(RerankQuery(f"user {j}", items, labels, rng.normal(size=12).astype(np.float32)))
    report = reranker.fit(queries, tmp_path, show_progress=False)
    assert report.steps > 0 and report.history[0]["epoch"] == 0
    valid_ranker = report.history[0]["valid_ndcg@10"]
    assert report.best_metric >= valid_ranker
    if report.best_epoch == 0:  # not beaten: the kept model is the zero residual (the ranker's order)
        np.testing.assert_array_equal(reranker.score("user 0", items), np.zeros(12, dtype=np.float32))
    assert list_ndcg(np.array([0.0, 1.0]), np.array([2.0, 1.0])) == pytest.approx(1 / np.log2(3))


def test_out_of_fold_logits_come_from_a_ranker_that_did_not_train_on_the_query(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import recs.ranking.fit as fit
    from recs.ranking.fit import RankingConfig

    examples = [SimpleNamespace(labels=np.array([1.0, 0.0]), features=np.full((2, 1), i, dtype=np.float32)) for i in range(9)]
    trained: list[set[int]] = []

    def fake_train(chosen: list, config: RankerConfig) -> object:
        seen = {int(e.features[0, 0]) for e in chosen}
        trained.append(seen)
        assert config.n_estimators == 37 and config.valid_share == 0.0  # the served ranker's tree count
        return SimpleNamespace(predict=lambda x, k=len(trained) - 1: np.full(len(x), k, dtype=np.float32))

    monkeypatch.setattr(fit, "train_ranker", fake_train)
    served = SimpleNamespace(best_iteration=37)
    scores = fit.out_of_fold_scores(examples, served, RankingConfig())  # type: ignore[arg-type]
    assert len(trained) == 2
    for i, s in enumerate(scores):
        assert i not in trained[int(s[0])]  # scored by the fold ranker that never saw it
    assert set().union(*trained) == set(range(9))


def test_relation_words() -> None:
    assert relation_words(3, 12.2, 14.0, 5) == "bought 3 times, last 12 days ago, about every 14 days"
    assert relation_words(0, 3650, 0, 2) == "never bought, looked at 2 times"
    assert relation_words(0, 3650, 0, 0) == "never bought"


def test_mmr_lambda_one_equals_relevance_order() -> None:
    rng = np.random.default_rng(0)
    relevance = rng.random(20)
    vectors = rng.normal(size=(20, 8))
    np.testing.assert_array_equal(mmr(relevance, vectors, 10, 1.0), np.argsort(-relevance)[:10])
    diverse = mmr(relevance, np.repeat(vectors[:1], 20, axis=0), 5, 0.3)
    assert len(set(diverse.tolist())) == 5


def test_category_cap() -> None:
    assert cap_per_category([0, 1, 2, 3], ["a", "a", "b", "a"], 1) == [0, 2]
    assert cap_per_category([0, 1], ["", ""], 1) == [0, 1]


def test_engine_full_pipeline_has_stage_scores_and_reasons(engine: Engine) -> None:
    assert engine.pipeline.ranker is not None and engine.pipeline.cross_encoder is not None
    user = _user_with_purchases(engine)
    results = engine.recommend(user_id=user, k=8, time_budget_ms=None)
    assert not results.degraded and len(results) == 8
    top = results[0]
    assert {"retrieval_rrf", "ranker", "cross_encoder"} <= set(top.stages)
    assert set(RANKING_FEATURES) <= set(top.features)
    assert all(r.reason for r in results)


def test_degraded_fallback_when_budget_is_zero(engine: Engine) -> None:
    user = _user_with_purchases(engine)
    degraded = engine.recommend(user_id=user, k=8, time_budget_ms=0)
    plain = engine.recommend(user_id=user, k=8, rerank=False)
    assert degraded.degraded
    assert [r.item_id for r in degraded] == [r.item_id for r in plain]
    assert all("cross_encoder" not in r.stages for r in degraded)


def test_every_filter_honoured(engine: Engine) -> None:
    r = engine.retriever
    user = _user_with_purchases(engine)
    bought = set(r.events.filter((pl.col("user_id") == user) & (pl.col("event") == "purchase"))["item_id"])
    stock = dict(zip(r.items["item_id"], r.items["in_stock"], strict=True))
    cats = dict(zip(r.items["item_id"], r.items["category"], strict=True))
    out = engine.recommend(user_id=user, k=15, in_stock=True, exclude_bought=True)
    assert out, "no in-stock, not-bought item recommended: the filter check would pass vacuously"
    assert all(stock[x.item_id] for x in out) and not bought & {x.item_id for x in out}
    category = r.items["category"][0].split(" > ")[0]
    in_category = engine.recommend(user_id=user, k=10, category=category)
    assert in_category, f"nothing recommended in {category!r}: the filter check would pass vacuously"
    assert all(cats[x.item_id].startswith(category) for x in in_category)
    first = engine.recommend(user_id=user, k=5)
    excluded = [x.item_id for x in first[:2]]
    assert not set(excluded) & {x.item_id for x in engine.recommend(user_id=user, k=5, exclude=excluded)}
    capped = engine.recommend(user_id=user, k=10, category_cap=1)
    assert len(capped) > 1, "a capped list of one item or none proves nothing about the cap"
    leaves = [cats[x.item_id] for x in capped]
    assert len(leaves) == len(set(leaves))


def test_novelty_returns_no_bought_item(engine: Engine) -> None:
    r = engine.retriever
    user = _user_with_purchases(engine)
    bought = set(r.events.filter((pl.col("user_id") == user) & (pl.col("event") == "purchase"))["item_id"])
    assert bought
    assert not bought & {x.item_id for x in engine.recommend(user_id=user, k=20, novelty=True)}


def test_ranker_recommender_novelty_shelf_has_no_bought_item(engine: Engine) -> None:
    from recs.evaluation.adapters import RankerRecommender

    user = _user_with_purchases(engine)
    events = engine.retriever.events
    model = RankerRecommender(engine.pipeline, novelty=True).fit(events, engine.retriever.items)
    bought = set(events.filter((pl.col("user_id") == user) & (pl.col("event") == "purchase"))["item_id"].to_list())
    ranked = model.recommend([user], k=20).item_ids[0]
    assert ranked and not bought & set(ranked)


def test_discover_ranker_is_saved_and_orders_the_novelty_shelf(engine: Engine) -> None:
    p = engine.pipeline
    assert p.discover is not None and p.discover.config.objective == "binary"
    user = _user_with_purchases(engine)
    context = engine.retriever.context(user_id=user)
    vector = engine.retriever.user_vectors([context.state])[0]
    from recs.retrieval.filters import Filters

    _, features, shelf = p.first_stage(context, vector, Filters(exclude_bought=True), novelty=True)
    np.testing.assert_array_equal(shelf, p.discover.predict(features))
    _, features, main = p.first_stage(context, vector, Filters(exclude_bought=True))
    np.testing.assert_array_equal(main, p.ranker.predict(features))
    shelf_list = p.rank(context, vector, Filters(), 10, RankOptions(novelty=True, rerank_top=10, time_budget_ms=None))
    assert shelf_list.items and all("cross_encoder" not in item.stages for item in shelf_list.items)


def test_artifact_carries_collaborative_factors(ranked_artifact: Path, engine: Engine) -> None:
    from recs.artifacts import open_artifact

    assert "item_factors.npy" in open_artifact(ranked_artifact).files
    factors = engine.retriever.stats.factors
    assert factors is not None and factors.item_factors.shape[0] == len(engine.retriever.catalog)
    user = _user_with_purchases(engine)
    cands = engine.retriever.candidates(engine.retriever.context(user_id=user), None)
    assert cands.features["from_als"].any() and np.isfinite(cands.features["als_score"]).all()


def test_binary_ranker_scores_are_raw_and_export_to_onnx(tmp_path: Path) -> None:
    import onnxruntime as ort

    from recs.export.ranker import export_ranker

    x, y, groups = _toy_ranking_data()
    ranker = LearnedRanker(("a", "b", "c"), RankerConfig(objective="binary", n_estimators=30, min_data_in_leaf=5)).fit(x, y, groups)
    scores = ranker.predict(x)
    assert scores.min() < 0  # raw log-odds, not probabilities
    assert "valid_auc" in ranker.metrics
    export_ranker(ranker, tmp_path / "discover.onnx")
    session = ort.InferenceSession(str(tmp_path / "discover.onnx"), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {"features": x})[0].ravel()
    np.testing.assert_allclose(onnx_scores, scores, atol=1e-4)


def test_pipeline_refuses_a_ranker_trained_on_other_features(engine: Engine) -> None:
    from recs.errors import ArtifactError
    from recs.ranking.pipeline import RankingPipeline

    x, y, groups = _toy_ranking_data()
    stale = LearnedRanker(("a", "b", "c"), RankerConfig(n_estimators=5)).fit(x, y, groups)
    with pytest.raises(ArtifactError, match="train-ranker"):
        RankingPipeline(engine.retriever, stale)


def test_explanations_name_a_real_history_item_or_feature(engine: Engine) -> None:
    r = engine.retriever
    for user in r.events["user_id"].unique().sort().to_list()[:10]:
        titles = set(r.events.filter(pl.col("user_id") == user).join(r.items, on="item_id")["title"])
        for item in engine.recommend(user_id=user, k=10):
            if item.reason.startswith("because you"):
                named = item.reason.removeprefix("because you bought ").removeprefix("because you looked at ")
                assert named in titles, item.reason
            elif item.reason.startswith("you buy this every"):
                assert item.features["times_bought"] >= 2
            elif item.reason.startswith("you bought this"):
                assert item.features["times_bought"] >= 1
            elif item.reason.startswith("bought by shoppers"):
                assert item.features["from_als"] == 1
            else:
                assert item.reason.startswith(("popular", "matches your search"))


def test_diversity_option_changes_nothing_at_zero(engine: Engine) -> None:
    user = _user_with_purchases(engine)
    a = engine.recommend(user_id=user, k=10, rerank=False)
    b = engine.recommend(user_id=user, k=10, rerank=False, diversity=0.0)
    assert [x.item_id for x in a] == [x.item_id for x in b]
    assert RankOptions().diversity == 0.0


def test_rebuilding_the_index_keeps_the_ranking_stage(ranked_artifact: Path, tmp_path: Path) -> None:
    import shutil

    from recs.retrieval.retriever import Retriever

    target = Path(shutil.copytree(ranked_artifact, tmp_path / "model"))
    retriever = Retriever.load(target)
    retriever = retriever.with_catalog(kind="flat", show_progress=False)
    retriever.save(target)
    again = Engine.load(target)
    assert again.pipeline.ranker is not None and again.pipeline.cross_encoder is not None


class _FakeCrossEncoder:
    """Scores item texts by a fixed rule: 'good' items high when `helpful`, low otherwise."""

    def __init__(self, helpful: bool) -> None:
        self.helpful = helpful

    def score(self, user_text: str, item_texts: list[str], deadline: float | None = None) -> np.ndarray:
        # Large enough to outweigh the first stage's scores it is added to (30 .. 1 here).
        good = 100.0 * np.array([t.startswith("good") for t in item_texts], dtype=np.float32)
        return good if self.helpful else -good


def _decision_queries() -> tuple[object, list]:
    from types import SimpleNamespace

    from recs.ranking.training import QueryExample
    from recs.retrieval.candidates import FEATURES, CandidateSet, UserHistory
    from recs.retrieval.pairs import UserState
    from recs.retrieval.retriever import UserContext

    n = 30
    texts = [("good " if i == 25 else "item ") + str(i) for i in range(n)]
    view = SimpleNamespace(catalog=SimpleNamespace(texts=texts))
    labels = np.zeros(n, dtype=np.float32)
    labels[25] = 1.0  # the relevant item sits at rank 26 of the first stage: only reranking finds it
    features = np.zeros((n, len(RANKING_FEATURES)), dtype=np.float32)
    cand_feats = {name: np.zeros(n, dtype=np.float32) for name in FEATURES}
    cands = CandidateSet(np.arange(n), cand_feats, (n - np.arange(n)).astype(np.float32), np.full(n, -1))
    context = UserContext("u", UserState("text", []), UserHistory.empty(), True)
    return view, [QueryExample("u", context, cands, features, labels) for _ in range(3)]


@pytest.mark.parametrize("helpful", [True, False])
def test_default_rerank_top_is_chosen_on_held_out_queries(helpful: bool) -> None:
    from recs.ranking.fit import RankingConfig, RankingModels, choose_rerank_top

    view, queries = _decision_queries()
    models = RankingModels(ranker=None, cross_encoder=_FakeCrossEncoder(helpful))  # type: ignore[arg-type]
    decision = choose_rerank_top(view, queries, models, RankingConfig(rerank_choices=(10, 30)))  # type: ignore[arg-type]
    assert decision["ndcg@10_first_stage"] == 0.0
    if helpful:  # only R=30 reaches the relevant item at rank 26
        assert decision["default_rerank_top"] == 30 and decision["ndcg@10_rerank_30"] == pytest.approx(1.0)
        assert decision["delta_all_30"]["delta"] == pytest.approx(1.0) and decision["delta_all_10"]["delta"] == 0.0
    else:
        assert decision["default_rerank_top"] == 0
    # The relevant item was never bought: all of the delta is on new items, none on re-buys.
    assert decision["delta_new_30"]["users"] == 3 and decision["delta_rebought_30"]["users"] == 0


def test_cross_encoder_layers_keep_the_backbones_first_layers(tmp_path: Path) -> None:
    """`layers` keeps the first N transformer layers (their weights the source's), the saved config
    says N, a save/load round trip scores the same, and `train_layers` counts within the kept ones."""
    from recs.encoders import build_tiny_bert, keep_first_layers, load_backbone, load_tokenizer
    from recs.retrieval.trainer import _freeze_backbone_layers

    folder = build_tiny_bert(tmp_path / "bert3", hidden=32, layers=3)
    source = load_backbone(folder)
    kept = keep_first_layers(load_backbone(folder), 2)
    assert len(kept.encoder.layer) == 2 and kept.config.num_hidden_layers == 2
    want = source.state_dict()
    got = kept.state_dict()
    assert not any(k.startswith("encoder.layer.2.") for k in got)
    assert set(got) == {k for k in want if not k.startswith("encoder.layer.2.")}
    for key, value in got.items():
        torch.testing.assert_close(value, want[key], rtol=0, atol=0)
    assert keep_first_layers(source, None) is source and len(source.encoder.layer) == 3  # None: all layers

    _freeze_backbone_layers(kept, 1)  # the top one of the two kept layers
    assert [all(p.requires_grad for p in layer.parameters()) for layer in kept.encoder.layer] == [False, True]
    _freeze_backbone_layers(kept, 5)  # more than kept: all of them, not the last few of a negative slice
    assert all(p.requires_grad for layer in kept.encoder.layer for p in layer.parameters())

    torch.manual_seed(0)
    reranker = CrossEncoderReranker(CrossEncoderModel(kept), load_tokenizer(folder), CrossEncoderConfig(layers=2, max_tokens=32))
    torch.nn.init.normal_(reranker.model.head.weight, std=0.5)  # a zero head scores 0 everywhere
    items = ["tent for camping", "coffee beans", "phone case"]
    scores = reranker.score("purchase: sleeping bag", items)
    assert np.abs(scores).max() > 0
    reranker.save(tmp_path / "ce")
    assert json.loads((tmp_path / "ce" / "cross_encoder_backbone.json").read_text())["num_hidden_layers"] == 2
    again = CrossEncoderReranker.load(tmp_path / "ce", reranker.tokenizer)
    assert len(again.model.backbone.encoder.layer) == 2 and again.config.layers == 2
    np.testing.assert_allclose(again.score("purchase: sleeping bag", items), scores, atol=1e-6)


def test_cross_encoder_layers_are_at_most_the_backbones(tiny_model_dir: Path) -> None:
    """`layers` is a ceiling: a backbone with fewer keeps all of its own (the default of 4 on the
    2-layer tiny BERT), below 1 is a config error, and so is a backbone it cannot cut unless the
    depth is only the default (`required=False`)."""
    from recs.config import RecsConfig
    from recs.encoders import keep_first_layers, load_backbone
    from recs.errors import ConfigError

    kept = keep_first_layers(load_backbone(tiny_model_dir), 3)
    assert len(kept.encoder.layer) == 2 and kept.config.num_hidden_layers == 2
    with pytest.raises(ConfigError, match=r"^layers = 0: keep at least 1 transformer layer \(or none for all\)$"):
        keep_first_layers(load_backbone(tiny_model_dir), 0)
    # A backbone without a BERT-style stack: an error when the config asked for the cut, else all kept.
    other = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"^layers = 4: Linear has no encoder.layer stack to cut"):
        keep_first_layers(other, 4)
    assert keep_first_layers(other, 4, required=False) is other
    with pytest.raises(ConfigError, match=r"cross_encoder\.layers: Input should be greater than or equal to 1"):
        RecsConfig.parse_dict({"ranking": {"cross_encoder": {"layers": 0}}})
    assert CrossEncoderConfig().layers == 4  # the default keeps MiniLM-L6's first 4 layers
    # Set like every cross-encoder field: `[ranking.cross_encoder] layers = 2` in the --config TOML.
    assert RecsConfig.parse_dict({"ranking": {"cross_encoder": {"layers": 2}}}).ranking.cross_encoder.layers == 2
    assert RecsConfig.parse_dict({"ranking": {"cross_encoder": {"layers": None}}}).ranking.cross_encoder.layers is None
