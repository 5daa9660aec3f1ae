"""The engine's stages behind the evaluation harness's `Recommender` interface.

Retrieval: `two_tower`, the towers alone (full ranking over the items the user has not bought, as
the two-tower candidate source serves; `CandidateConfig.two_tower_new_only`); `candidates`, every
source merged by reciprocal-rank fusion; `zero_shot`, the untuned backbone. Each wraps a
`Retriever`; when one is given already trained, `fit` only swaps in the behaviour log to serve
from (`Retriever.with_events`, no retraining).

Ranking: `ranker`, candidates ordered by the learned ranker; `engine`, the full default pipeline
(ranker, cross-encoder residual on the top R). Both wrap a trained `RankingPipeline` and
serve from the events given to `fit`; with `novelty` they serve the "discover" shelf (only items
new to the user).

None of them saves: each wraps a trained model artifact (towers, index, rankers), which its
arrays alone cannot rebuild. `save` refuses, and so does `Recommender.load` of such a folder:
save the artifact (`Retriever.save`, `recs train`), load it, and wrap it again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recs.evaluation.recommender import Recommender
from recs.ranking.pipeline import RankingPipeline, RankOptions
from recs.retrieval.config import RetrievalConfig
from recs.retrieval.filters import Filters
from recs.retrieval.retriever import Retriever

__all__ = [
    "CandidatesRecommender",
    "EngineRecommender",
    "RankerRecommender",
    "TwoTowerRecommender",
    "ZeroShotRecommender",
]

_WRAPS_ARTIFACT = (
    "wraps a trained model artifact: save the artifact (`Retriever.save`), not the recommender, "
    "then wrap `Retriever.load(path)` again"
)
_WRAPS_PIPELINE = (
    "wraps a trained ranking pipeline: save the artifact (`recs train-ranker` / `save_ranking`), "
    "not the recommender, then wrap `Engine.load(path).pipeline` again"
)


def _canonical(events: pl.DataFrame) -> pl.DataFrame:
    """The prepared events without the harness's helper columns (`_t`, `_w`, `_u`, `_i`)."""
    return events.drop([c for c in events.columns if c.startswith("_")])


# ---------------------------------------------------------------------------------------------
# Retrieval


class _RetrieverRecommender(Recommender):
    not_saveable = _WRAPS_ARTIFACT

    def __init__(
        self,
        retriever: Retriever | None = None,
        config: RetrievalConfig | None = None,
        work_dir: Path | None = None,
        unknown_user: str = "fallback",
    ) -> None:
        super().__init__(unknown_user=unknown_user)  # type: ignore[arg-type]
        self.retriever = retriever
        self.config = config
        self.work_dir = work_dir

    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        canonical = _canonical(events)
        if self.retriever is None:
            self.retriever = self._train(canonical, items)
        else:
            self.retriever = self.retriever.with_events(canonical, items)

    def _train(self, events: pl.DataFrame, items: pl.DataFrame) -> Retriever:
        return Retriever.fit(events, items, self.config, self.work_dir, show_progress=False)

    def _user_vectors(self, users: np.ndarray) -> tuple[list, np.ndarray]:
        contexts = [self.retriever.context(user_id=str(self._user_ids[u])) for u in users]  # type: ignore[union-attr]
        return contexts, self.retriever.user_vectors([c.state for c in contexts])  # type: ignore[union-attr]


class TwoTowerRecommender(_RetrieverRecommender):
    name = "two_tower"

    def _score(self, users: np.ndarray) -> np.ndarray:
        contexts, vectors = self._user_vectors(users)
        scores = vectors @ self.retriever.item_vectors.T  # type: ignore[union-attr]
        if self.retriever.config.candidates.two_tower_new_only:  # type: ignore[union-attr]
            # As the two-tower candidate source serves: only items the user has not bought.
            for row, context in enumerate(contexts):
                if len(context.history.rows):
                    scores[row, np.unique(context.history.rows)] = -np.inf
        return scores


class ZeroShotRecommender(TwoTowerRecommender):
    name = "zero_shot"
    not_saveable = (
        "wraps a backbone model, not arrays: build it again (`ZeroShotRecommender(config=...)`) "
        "and fit it"
    )

    def _train(self, events: pl.DataFrame, items: pl.DataFrame) -> Retriever:
        return Retriever.zero_shot(events, items, self.config)


class CandidatesRecommender(_RetrieverRecommender):
    name = "candidates"

    def _score(self, users: np.ndarray) -> np.ndarray:
        contexts, vectors = self._user_vectors(users)
        out = np.full((len(users), len(self._item_ids)), -np.inf)
        for row, (context, vector) in enumerate(zip(contexts, vectors, strict=True)):
            cands = self.retriever.candidates(context, vector)  # type: ignore[union-attr]
            out[row, cands.item_rows] = cands.merged_score
        return out


# ---------------------------------------------------------------------------------------------
# Ranking


class _PipelineRecommender(_RetrieverRecommender):
    not_saveable = _WRAPS_PIPELINE

    def __init__(
        self, pipeline: RankingPipeline, options: RankOptions | None = None, unknown_user: str = "fallback"
    ) -> None:
        super().__init__(retriever=pipeline.retriever, unknown_user=unknown_user)
        self.pipeline = pipeline
        self.options = options or RankOptions()

    def _fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        # The same encoders and rankers serving from the fitted events, over the fitted catalog
        # (so that the retriever's rows are this model's item indices).
        view = self.pipeline.retriever.with_events(_canonical(events), items)
        self.retriever = view
        p = self.pipeline
        self.pipeline = RankingPipeline(view, p.ranker, p.cross_encoder, p.discover)

    def _score(self, users: np.ndarray) -> np.ndarray:
        contexts, vectors = self._user_vectors(users)
        out = np.full((len(users), len(self._item_ids)), -np.inf)
        # Every candidate in order (the two-tower source may be off: n_two_tower 0).
        k = max(200, self.retriever.config.candidates.n_two_tower)  # type: ignore[union-attr]
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

    def __init__(
        self, pipeline: RankingPipeline, rerank_top: int = 20, unknown_user: str = "fallback", novelty: bool = False
    ) -> None:
        super().__init__(
            pipeline,
            RankOptions(rerank=True, rerank_top=rerank_top, time_budget_ms=None, novelty=novelty),
            unknown_user,
        )
