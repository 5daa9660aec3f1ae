"""Shared fixtures: small shops written to temp folders, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

ITEMS_CSV = """item_id,title,description,category,brand,price,in_stock
T1,TrailPeak 2-Person Dome Tent,Waterproof polyester,Outdoors > Camping > Tents,TrailPeak,120.00,true
T2,Summit 4-Person Tunnel Tent,Roomy family tent,Outdoors > Camping > Tents,Summit,240.00,true
S1,Down Sleeping Bag,Warm to -5C,Outdoors > Camping > Sleeping Bags,TrailPeak,80.00,true
L1,LED Camping Lantern,Rechargeable,Outdoors > Camping > Lights,Glow,20.00,false
C1,Arabica Coffee Beans 1kg,Medium roast,Grocery > Coffee > Beans,BeanCo,15.00,true
C2,Espresso Coffee Beans 500g,Dark roast,Grocery > Coffee > Beans,BeanCo,9.50,true
M1,Ceramic Coffee Mug,350 ml,Kitchen > Tableware > Mugs,HomeLine,7.00,true
P1,Smartphone X,6.1 inch screen,Electronics > Phones > Smartphones,Voltix,599.00,true
P2,Phone Case for Smartphone X,Shockproof,Electronics > Phones > Cases,Voltix,19.00,true
P3,USB-C Fast Charger,30W,Electronics > Phones > Chargers,Voltix,25.00,true
"""

# u1 re-buys coffee; u2 camps; u3 buys a phone then accessories; u4 has one order only.
EVENTS_CSV = """user_id,item_id,timestamp,event,order_id,quantity
u1,C1,2026-01-01T09:00:00Z,view,,
u1,C1,2026-01-01T09:05:00Z,purchase,o1,1
u1,M1,2026-01-01T09:05:00Z,purchase,o1,2
u1,C1,2026-01-15T09:00:00Z,purchase,o2,1
u1,C2,2026-01-29T09:00:00Z,purchase,o3,1
u1,C1,2026-02-12T09:00:00Z,purchase,o4,1
u2,T1,2026-01-02T10:00:00Z,view,,
u2,T2,2026-01-02T10:01:00Z,view,,
u2,T1,2026-01-02T10:05:00Z,purchase,o5,1
u2,S1,2026-01-20T10:00:00Z,purchase,o6,1
u2,L1,2026-02-01T10:00:00Z,purchase,o7,1
u3,P1,2026-01-05T12:00:00Z,purchase,o8,1
u3,P2,2026-01-05T12:00:00Z,purchase,o8,1
u3,P3,2026-01-20T12:00:00Z,purchase,o9,1
u3,C1,2026-02-10T12:00:00Z,purchase,o10,1
u3,P2,2026-02-10T12:00:00Z,purchase,o10,1
u4,M1,2026-01-10T08:00:00Z,purchase,o11,1
"""

BUNDLES_CSV = """bundle_id,item_id,title
b1,T1,Weekend camping kit
b1,S1,Weekend camping kit
b1,L1,Weekend camping kit
b2,P1,Phone starter pack
b2,P2,Phone starter pack
b2,P3,Phone starter pack
"""


@pytest.fixture()
def shop_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "items.csv").write_text(ITEMS_CSV, encoding="utf-8")
    (folder / "events.csv").write_text(EVENTS_CSV, encoding="utf-8")
    (folder / "bundles.csv").write_text(BUNDLES_CSV, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with MiniLM's tokenizer, built once per session (no download)."""
    from recs.encoders import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model", hidden=32, layers=2)


@pytest.fixture(scope="session")
def small_demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo shop (seeded), written once per session."""
    from recs.data.demo import write_demo_shop

    folder = tmp_path_factory.mktemp("demo-small") / "shop"
    write_demo_shop(folder, seed=1, scale=0.25)
    return folder


@pytest.fixture(scope="session")
def trained_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, small_demo_dir: Path) -> Path:
    """Towers fine-tuned for a few steps on the small demo shop and saved; tests copy it."""
    from recs.data import load_dataset
    from recs.retrieval.retriever import RetrievalConfig, Retriever
    from recs.retrieval.towers import TowerConfig
    from recs.retrieval.trainer import TrainConfig

    dataset, _ = load_dataset(small_demo_dir)
    config = RetrievalConfig(
        towers=TowerConfig(model=str(tiny_model_dir)),
        train=TrainConfig(epochs=1, batch_size=32, max_pairs_per_epoch=256, valid_users=50),
    )
    work = tmp_path_factory.mktemp("train-work")
    retriever = Retriever.fit(dataset.events, dataset.items, config, work_dir=work, show_progress=False)
    return retriever.save(work.parent / "artifact")


@pytest.fixture(scope="session")
def ranked_artifact(tmp_path_factory: pytest.TempPathFactory, trained_artifact: Path, small_demo_dir: Path) -> Path:
    """`trained_artifact` plus a learned ranker, a discover ranker and a residual cross-encoder (tiny, fast)."""
    import shutil

    from recs.data import leave_last_out, load_dataset
    from recs.ranking.artifact import save_ranking
    from recs.ranking.cross_encoder import CrossEncoderConfig
    from recs.ranking.fit import RankingConfig, fit_ranking
    from recs.ranking.pipeline import RankingPipeline, RankOptions
    from recs.retrieval.retriever import Retriever

    target = Path(shutil.copytree(trained_artifact, tmp_path_factory.mktemp("ranked") / "model"))
    dataset, _ = load_dataset(small_demo_dir)
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    retriever = Retriever.load(target)
    config = RankingConfig(cross_encoder=CrossEncoderConfig(epochs=1, max_queries=40, max_tokens=64))
    models = fit_ranking(retriever, split.fit_events, split.test, config, tmp_path_factory.mktemp("rank-work"), show_progress=False)
    assert models.cross_encoder is not None
    assert models.report["earlier_queries"] > 0  # the basket before the held-out one teaches the rankers too
    # Reranking off by default: the served rankers are refitted on every user, group C included.
    assert models.report.get("ranker_refit_on_all", False) == (models.report["rerank_decision"]["default_rerank_top"] == 0)
    # A tiny random model rarely beats the ranker on validation, and the best-epoch rule then keeps
    # the zero residual it starts from: a fixed non-zero head makes the CE move the order in tests.
    import torch

    with torch.no_grad():
        head = models.cross_encoder.model.head
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    save_ranking(target, RankingPipeline(retriever, models.ranker, models.cross_encoder, models.discover), RankOptions())
    return target


def copy_with_set_scorer(source: Path, target: Path, shop: Path) -> Path:
    """`source` copied to `target` with a quickly trained set scorer added (so bundles answer):
    the served model of the service, page and item-change tests."""
    import shutil

    from recs.bundling.bundler import Bundler, save_bundler
    from recs.bundling.config import BundlerConfig, SetScorerConfig, SetTrainConfig
    from recs.data import load_dataset
    from recs.retrieval.retriever import Retriever

    target = Path(shutil.copytree(source, target))
    dataset, _ = load_dataset(shop)
    config = BundlerConfig(scorer=SetScorerConfig(hidden=16, pair_rank=8), train=SetTrainConfig(epochs=1, batch_size=32, patience=1))
    bundler = Bundler.fit(Retriever.load(target), dataset.events, dataset.bundles, config, work_dir=target.parent / "work", show_progress=False)
    save_bundler(target, bundler)
    return target

