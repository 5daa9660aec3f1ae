"""Bad-input cases: api (Engine.load, Engine.recommend, Engine.bundle). See `tests/bad_inputs/case.py`
for what a case is. Each loads a fresh copy of the trained towers (`ws.model`), which has no
ranker or set scorer: argument checks come before the work, so they answer the same there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recs.errors import (
    ArtifactError,
    ConfigError,
    NotFittedError,
    UnknownItemError,
    UnknownUserError,
)
from recs.serving import Engine
from tests.bad_inputs.case import ApiCase, Workspace


def _engine(ws: Workspace) -> Engine:
    return Engine.load(ws.model)


def _user(engine: Engine) -> str:
    return str(engine.retriever.events["user_id"][0])


def _item(engine: Engine) -> str:
    return engine.retriever.catalog.item_ids[0]


def recommend(**kwargs: Any) -> Callable[[Workspace], Any]:
    """`Engine.recommend` for the copy's first user, with `kwargs` over k=5."""

    def call(ws: Workspace) -> Any:
        engine = _engine(ws)
        args = {"user_id": _user(engine), "k": 5, **kwargs}
        return engine.recommend(**args)

    return call


def bundle(**kwargs: Any) -> Callable[[Workspace], Any]:
    """`Engine.bundle` for the copy's first user, with `kwargs`."""

    def call(ws: Workspace) -> Any:
        engine = _engine(ws)
        return engine.bundle(_user(engine), **kwargs)

    return call


def _load_missing(ws: Workspace) -> Any:
    return Engine.load(ws.tmp / "no-such-model")


def _load_not_an_artifact(ws: Workspace) -> Any:
    folder = ws.tmp / "just-files"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model\n", encoding="utf-8")
    return Engine.load(folder)


def _history_unknown(ws: Workspace) -> Any:
    engine = _engine(ws)
    return engine.recommend(history=[_item(engine), "NO-SUCH-ITEM"], k=5)


def _bundle_unknown_anchor(ws: Workspace) -> Any:
    """Needs a set scorer: trains a small one on the copy (slow)."""
    from recs.bundling.bundler import Bundler, save_bundler
    from recs.bundling.config import BundlerConfig, SetScorerConfig, SetTrainConfig
    from recs.data import load_dataset
    from recs.retrieval.retriever import Retriever

    dataset, _ = load_dataset(ws.demo)
    retriever = Retriever.load(ws.model)
    config = BundlerConfig(scorer=SetScorerConfig(hidden=16, pair_rank=8), train=SetTrainConfig(epochs=1, batch_size=32, patience=1))
    save_bundler(ws.model, Bundler.fit(retriever, dataset.events, dataset.bundles, config, work_dir=ws.tmp / "work", show_progress=False))
    return Engine.load(ws.model).bundle(item="NO-SUCH-ITEM")


def _unknown_category_near(ws: Workspace) -> Any:
    engine = _engine(ws)
    path = next(c for c in engine.retriever.items["category"].to_list() if c)
    return engine.recommend(user_id=_user(engine), k=5, category=path[:-1] + "#")


def _recommend_batch_bad_history(ws: Workspace) -> Any:
    engine = _engine(ws)
    return engine.recommend_batch([None, None], 5, histories=[[_item(engine)], [None]])


def _unknown_user_raise(ws: Workspace) -> Any:
    return _engine(ws).recommend(user_id="ghost-user", k=5, unknown_user="raise")


CASES: list[ApiCase] = [
    ApiCase("api-load-missing-folder", _load_missing, ArtifactError, ("not found", "no-such-model")),
    ApiCase("api-load-not-an-artifact", _load_not_an_artifact, ArtifactError, ("just-files", "manifest.json")),
    ApiCase("api-k-zero", recommend(k=0), ConfigError, ("k must be a positive integer", "0")),
    ApiCase("api-k-negative", recommend(k=-1), ConfigError, ("k must be a positive integer", "-1")),
    ApiCase("api-k-string", recommend(k="5"), ConfigError, ("k must be a positive integer", "'5'")),
    ApiCase("api-unknown-user-policy-bogus", recommend(unknown_user="bogus"), ConfigError,
            ("unknown_user", "raise", "warn", "fallback", "bogus")),
    ApiCase("api-unknown-user-raise", _unknown_user_raise, UnknownUserError, ("unknown user", "ghost-user")),
    ApiCase("api-history-none-entry", recommend(user_id=None, history=["X", None]), ConfigError, ("history[1]", "none")),
    ApiCase("api-history-int-entry", recommend(user_id=None, history=[12]), ConfigError, ("history[0]", "pass '12'")),
    ApiCase("api-history-empty-id", recommend(user_id=None, history=[" "]), ConfigError, ("history[0]", "empty item id")),
    ApiCase("api-history-a-string", recommend(user_id=None, history="A,B"), ConfigError, ("history", "list of item ids")),
    ApiCase("api-history-unknown-ids", _history_unknown, UnknownItemError, ("unknown item", "NO-SUCH-ITEM")),
    ApiCase("api-batch-history-none", _recommend_batch_bad_history, ConfigError, ("history[0]", "none")),
    ApiCase("api-exclude-none-entry", recommend(exclude=[None]), ConfigError, ("exclude[0]",)),
    ApiCase("api-price-min-above-max", recommend(price_min=100, price_max=10), ConfigError, ("price_min", "above", "price_max")),
    ApiCase("api-price-nan", recommend(price_min=float("nan")), ConfigError, ("price_min", "finite", "nan")),
    ApiCase("api-price-negative", recommend(price_max=-1.0), ConfigError, ("price_max", ">= 0", "-1")),
    ApiCase("api-category-nowhere", recommend(category="No Such Aisle"), ConfigError,
            ("category 'no such aisle'", "not in the catalog")),
    ApiCase("api-category-typo-suggests", _unknown_category_near, ConfigError, ("not in the catalog", "did you mean")),
    ApiCase("api-category-blank", recommend(category="  "), ConfigError, ("empty category",)),
    ApiCase("api-diversity-above-one", recommend(diversity=1.5), ConfigError, ("diversity", "1")),
    ApiCase("api-rerank-top-negative", recommend(rerank_top=-1), ConfigError, ("rerank_top", "0")),
    ApiCase("api-time-budget-negative", recommend(time_budget_ms=-5), ConfigError, ("time_budget_ms", "0")),
    ApiCase("api-unknown-option", recommend(rerank_depth=5), ConfigError, ("rerank_depth", "extra")),
    ApiCase("api-bundle-size-reversed", bundle(size=(3, 2)), ConfigError, ("size range 3-2", "maximum is below the minimum")),
    ApiCase("api-bundle-size-zero", bundle(size=(0, 2)), ConfigError, ("min_size", "positive")),
    ApiCase("api-bundle-size-not-a-pair", bundle(size="2-4"), ConfigError, ("size", "(min, max) pair")),
    ApiCase("api-bundle-budget-negative", bundle(budget=-1.0), ConfigError, ("budget", "non-negative")),
    ApiCase("api-bundle-n-zero", bundle(n=0), ConfigError, ("n must be a positive integer",)),
    ApiCase("api-bundle-policy-bogus", bundle(unknown_user="sometimes"), ConfigError, ("unknown_user", "sometimes")),
    ApiCase("api-bundle-anchor-none", bundle(items=["A", None]), ConfigError, ("items[1]",)),
    ApiCase("api-bundle-without-set-scorer", bundle(), NotFittedError, ("no set scorer", "train-bundler")),
    ApiCase("api-bundle-unknown-anchor", _bundle_unknown_anchor, UnknownItemError, ("unknown item", "NO-SUCH-ITEM"), slow=True),
]
