"""The retrieval stage behind the evaluation harness's `Recommender` interface.

`two_tower`: the towers alone (full ranking over the items the user has not bought, as the
two-tower candidate source serves; `CandidateConfig.two_tower_new_only`); `candidates`: every source merged
by reciprocal-rank fusion; `zero_shot`: the untuned backbone. Each wraps a `Retriever`; when one
is given already trained, `fit` only swaps in the behaviour log to serve from (no retraining).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recs.evaluation.recommender import Recommender
from recs.retrieval.retriever import RetrievalConfig, Retriever


class _RetrieverRecommender(Recommender):
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
        canonical = events.drop([c for c in events.columns if c.startswith("_")])
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
