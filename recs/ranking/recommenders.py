"""The ranking pipeline behind the evaluation harness's `Recommender` interface.

`ranker`: candidates ordered by the learned ranker; `engine`: the full default pipeline (ranker,
cross-encoder on the top R, second stage). Both serve from the events given to `fit`; with
`novelty` they serve the "discover" shelf (only items new to the user).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recs.ranking.pipeline import RankingPipeline, RankOptions
from recs.ranking.training import serving_view
from recs.retrieval.filters import Filters
from recs.retrieval.recommenders import _RetrieverRecommender


class _PipelineRecommender(_RetrieverRecommender):
    def __init__(self, pipeline: RankingPipeline, options: RankOptions | None = None, unknown_user: str = "fallback") -> None:
        super().__init__(retriever=pipeline.retriever, unknown_user=unknown_user)
        self.pipeline = pipeline
        self.options = options or RankOptions()

    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        canonical = events.drop([c for c in events.columns if c.startswith("_")])
        view = serving_view(self.pipeline.retriever, canonical)
        self.retriever = view
        p = self.pipeline
        self.pipeline = RankingPipeline(view, p.ranker, p.cross_encoder, p.stage2, p.discover)

    def _score(self, users: np.ndarray) -> np.ndarray:
        contexts, vectors = self._user_vectors(users)
        out = np.full((len(users), len(self._item_ids)), -np.inf)
        k = self.retriever.config.candidates.n_two_tower  # type: ignore[union-attr]
        for row, (context, vector) in enumerate(zip(contexts, vectors, strict=True)):
            ranked = self.pipeline.rank(context, vector, Filters(), k, self.options)
            n = len(ranked.items)
            for position, item in enumerate(ranked.items):
                out[row, item.row] = float(n - position)
        return out


class RankerRecommender(_PipelineRecommender):
    name = "ranker"

    def __init__(self, pipeline: RankingPipeline, unknown_user: str = "fallback", novelty: bool = False) -> None:
        super().__init__(pipeline, RankOptions(rerank=False, novelty=novelty), unknown_user)


class EngineRecommender(_PipelineRecommender):
    name = "engine"

    def __init__(self, pipeline: RankingPipeline, rerank_top: int = 20, unknown_user: str = "fallback", novelty: bool = False) -> None:
        super().__init__(pipeline, RankOptions(rerank=True, rerank_top=rerank_top, time_budget_ms=None, novelty=novelty), unknown_user)
