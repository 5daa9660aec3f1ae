"""`Engine`: the one object an application talks to (retrieve -> rank -> rerank -> top k).

    engine = recs.Engine.load("build/demo/model")
    engine.recommend(user_id="U0007", k=10)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recs.artifacts import Artifact, open_artifact
from recs.bundling.bundler import Bundler, Bundles, RankedBundle, save_bundler
from recs.bundling.composer import BundleConstraints
from recs.config import RecsConfig, UnknownUserPolicy
from recs.errors import NotFittedError
from recs.ranking.artifact import save_ranking
from recs.ranking.pipeline import RankingPipeline, RankOptions
from recs.retrieval.candidates import SOURCES
from recs.retrieval.filters import Filters
from recs.retrieval.retriever import Retriever
from recs.serving.load import read_engine
from recs.serving.onnx_runtime import RuntimeOptions
from recs.serving.requests import (
    check_ids,
    check_non_negative_int,
    check_pair,
    check_policy,
    check_positive_int,
)


@dataclass
class RecommendedItem:
    rank: int
    item_id: str
    title: str
    price: float | None
    score: float
    source: str  # the candidate sources that found it, e.g. "two_tower+history"
    reason: str
    stages: dict[str, float] = field(default_factory=dict)  # each stage's score
    features: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recommendations(list):
    """A list of RecommendedItem with `degraded` (the cross-encoder missed its time budget)."""

    degraded: bool = False
    timings_ms: dict[str, float]


@dataclass(frozen=True)
class _Parts:
    """What a request reads, swapped as one reference (item changes: `Engine.adopt`)."""

    retriever: Retriever
    pipeline: RankingPipeline
    bundler: Bundler | None


class Engine:
    """Retriever -> RankingPipeline -> (Bundler): torch or ONNX parts behind the same interfaces."""

    def __init__(
        self,
        retriever: Retriever,
        pipeline: RankingPipeline | None = None,
        options: RankOptions | None = None,
        bundler: Bundler | None = None,
        runtime: RuntimeOptions | None = None,
    ) -> None:
        # The set scorer + composer (`bundler`) when the artifact has one.
        self._parts = _Parts(retriever, pipeline or RankingPipeline(retriever), bundler)
        self.options = options or RankOptions()
        self.runtime = runtime  # the ONNX sessions' settings; None when torch serves
        self.path: Path | None = None  # the artifact folder it was loaded from (None: built in memory)
        self.created: str | None = None  # that artifact's manifest `created`: its version

    @property
    def retriever(self) -> Retriever:
        return self._parts.retriever

    @property
    def pipeline(self) -> RankingPipeline:
        return self._parts.pipeline

    @property
    def bundler(self) -> Bundler | None:
        return self._parts.bundler

    def adopt(self, other: Engine) -> None:
        """Serve `other`'s retriever, pipeline and bundler from the next request on (an item
        change built off to the side: recs.serving.items). One reference is swapped: a request
        in flight finishes on the parts it started with, never on half of each."""
        self._parts = other._parts

    @classmethod
    def load(cls, path: str | Path | Artifact, runtime: RuntimeOptions | None = None) -> Engine:
        """The engine of any artifact folder: a trained one (torch) or a `recs export` one
        (onnxruntime, no torch). `runtime` sets the ONNX sessions' precision, providers, threads."""
        artifact = path if isinstance(path, Artifact) else open_artifact(path)
        parts = read_engine(artifact, runtime)
        engine = cls(parts.retriever, parts.pipeline, parts.options, parts.bundler, parts.runtime)
        engine.path, engine.created = artifact.path, artifact.created
        return engine

    @classmethod
    def fit(
        cls,
        items: pl.DataFrame,
        events: pl.DataFrame,
        config: RecsConfig | None = None,
        *,
        out: str | Path,
        bundles: pl.DataFrame | None = None,
        show_progress: bool = True,
    ) -> Engine:
        """What `recs train`, `build-index`, `train-ranker` and `train-bundler` run, in one call:
        the frames validated and cleaned as files are, then towers, index, rankers (and
        cross-encoder), set scorer; saved to `out` and loaded back."""
        from recs.serving.fit import fit_all, frames_dataset

        config = config or RecsConfig()
        fit_all(frames_dataset(items, events, bundles, config), config, Path(out), show_progress=show_progress)
        return cls.load(out)

    def save(self, path: str | Path) -> Path:
        self.retriever.save(path)
        save_ranking(path, self.pipeline, self.options)
        if self.bundler is not None:
            save_bundler(path, self.bundler)
        return Path(path)

    def bundle(
        self,
        user_id: str | None = None,
        *,
        item: str | None = None,
        items: list[str] | None = None,
        size: tuple[int, int] = (2, 4),
        budget: float | None = None,
        n: int = 3,
        in_stock: bool = True,
        exclude: list[str] | None = None,
        allow_same_leaf: list[str] | None = None,
        history: list[str] | None = None,
        text: str | None = None,
        unknown_user: UnknownUserPolicy = "fallback",
        max_shared: int | None = None,
    ) -> Bundles:
        """Up to `n` distinct bundles for a user and/or around anchor item(s), each within the
        size range and budget, in stock, at most one item per leaf category (unless listed in
        `allow_same_leaf`, "*" = any), without `exclude`; no two share more than `max_shared`
        non-anchor items (default 1). Empty with `.reason` when none fits.
        See recs.bundling.bundler.Bundler.compose."""
        # Arguments first: a bad request is reported as such, whatever the artifact holds.
        anchors = check_ids(([item] if item is not None else []) + list(items or []), "items") or []
        low, high = check_pair(size, "size")
        BundleConstraints(min_size=low, max_size=high, budget=budget)
        check_positive_int(n, "n")
        if max_shared is not None:
            check_non_negative_int(max_shared, "max_shared")
        policy = check_policy(unknown_user) or "fallback"
        history, exclude = check_ids(history, "history"), check_ids(exclude, "exclude")
        return self._bundler().compose(
            user_id, items=anchors, size=(low, high), budget=budget, n=n, in_stock=in_stock, exclude=exclude or (),
            allow_same_leaf=allow_same_leaf or (), history=history, text=text, unknown_user=policy,
            max_shared=max_shared,
        )

    def rank_bundles(self, user_id: str | None = None, k: int = 10, *, history: list[str] | None = None) -> list[RankedBundle]:
        """The curated bundles the set scorer was trained with, ranked for a user."""
        return self._bundler().rank_bundles(user_id, k, history=history)

    def _bundler(self) -> Bundler:
        if self.bundler is None:
            raise NotFittedError("this artifact has no set scorer; train one with `recs train-bundler`")
        return self.bundler

    def recommend(
        self,
        user_id: str | None = None,
        k: int = 10,
        *,
        history: list[str] | None = None,
        text: str | None = None,
        category: str | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        in_stock: bool = False,
        exclude_bought: bool = False,
        exclude: list[str] | None = None,
        unknown_user: UnknownUserPolicy | None = None,
        options: RankOptions | None = None,
        **option_overrides: Any,
    ) -> Recommendations:
        """Top-k items for a known user, or for someone described by `history` (item ids) and/or
        `text` (a session or a search query). Unknown users follow `unknown_user`. Filters:
        `category` (that path or below, case-insensitive), `price_min`/`price_max` (items without
        a price are kept), `in_stock`, `exclude_bought`, `exclude` (see recs.retrieval.filters).
        `option_overrides` set RankOptions fields for this call (rerank, rerank_top, diversity,
        category_cap, novelty, time_budget_ms)."""
        return self.recommend_batch(
            [user_id], k, histories=[history], texts=[text], category=category, price_min=price_min,
            price_max=price_max, in_stock=in_stock,
            exclude_bought=exclude_bought, exclude=exclude, unknown_user=unknown_user, options=options,
            **option_overrides,
        )[0]

    def recommend_batch(
        self,
        user_ids: list[str | None],
        k: int = 10,
        *,
        histories: list[list[str] | None] | None = None,
        texts: list[str | None] | None = None,
        category: str | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        in_stock: bool = False,
        exclude_bought: bool = False,
        exclude: list[str] | None = None,
        unknown_user: UnknownUserPolicy | None = None,
        options: RankOptions | None = None,
        **option_overrides: Any,
    ) -> list[Recommendations]:
        check_positive_int(k, "k")
        policy = check_policy(unknown_user)
        opts = options or self.options
        if option_overrides:
            opts = RankOptions.parse_dict({**opts.model_dump(), **option_overrides}, source="recommend()")
        n = len(user_ids)
        histories = [check_ids(h, "history") for h in histories] if histories else [None] * n
        texts = texts or [None] * n
        parts = self._parts  # one consistent model for the whole request
        r = parts.retriever
        filters = Filters(category=category, price_min=price_min, price_max=price_max, in_stock_only=in_stock,
                          exclude_bought=exclude_bought, exclude=tuple(check_ids(exclude, "exclude") or ()))
        r.masks.catalog_mask(filters)  # a category the catalog does not have is refused before any work
        contexts = [
            r.context(user_id=u, history=h, text=t, policy=policy)
            for u, h, t in zip(user_ids, histories, texts, strict=True)
        ]
        vectors = r.user_vectors([c.state for c in contexts])
        out: list[Recommendations] = []
        for context, vector in zip(contexts, vectors, strict=True):
            ranked = parts.pipeline.rank(context, vector, filters, k, opts)
            items = Recommendations(self._item(r, rank, item) for rank, item in enumerate(ranked.items, start=1))
            items.degraded = ranked.degraded
            items.timings_ms = ranked.timings_ms
            out.append(items)
        return out

    @staticmethod
    def _item(r: Retriever, rank: int, item: Any) -> RecommendedItem:
        row = item.row
        price = r.items["price"][row] if "price" in r.items.columns else None
        sources = [s for s in SOURCES if item.features.get(f"from_{s}", 0.0) > 0]
        return RecommendedItem(
            rank=rank,
            item_id=r.catalog.item_ids[row],
            title=r.catalog.titles[row],
            price=None if price is None or not np.isfinite(price) else float(price),
            score=float(item.score),
            source="+".join(sources) or "popularity",
            reason=item.reason,
            stages=item.stages,
            features=item.features,
        )
