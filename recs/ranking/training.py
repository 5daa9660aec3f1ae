"""Training data for the ranker: the engine's own candidates for a held-out basket, labelled."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recs.errors import DataError
from recs.progress import progress_bar
from recs.ranking.features import RANKING_FEATURES, feature_matrix
from recs.ranking.ranker import LearnedRanker, RankerConfig
from recs.retrieval.candidates import CandidateSet
from recs.retrieval.retriever import Retriever, UserContext


@dataclass
class QueryExample:
    user_id: str
    context: UserContext
    candidates: CandidateSet
    features: np.ndarray
    labels: np.ndarray  # 1.0 where the candidate is in the held-out basket


def serving_view(retriever: Retriever, history_events: pl.DataFrame) -> Retriever:
    """The same towers and catalog, serving from `history_events` (e.g. everything before a split)."""
    return retriever.with_events(history_events)


def query_examples(
    view: Retriever,
    targets: pl.DataFrame,
    n_candidates: int,
    max_users: int,
    seed: int = 0,
    show_progress: bool = False,
) -> list[QueryExample]:
    """One example per target user known to `view`: candidates (n_candidates from the two-tower),
    their features, and labels from `targets` (user_id, item_id)."""
    grouped = targets.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
    users = [u for u in grouped["user_id"].to_list() if view.known_user(u)]
    if len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, max_users, replace=False).tolist())
    relevant = dict(zip(grouped["user_id"].to_list(), grouped["item_id"].to_list(), strict=True))
    # A two-tower source switched off (n_two_tower 0) stays off while the ranker learns.
    n_two_tower = n_candidates if view.config.candidates.n_two_tower > 0 else 0
    config = view.config.model_copy(
        update={"candidates": view.config.candidates.model_copy(update={"n_two_tower": n_two_tower})}
    )
    view.config = config
    out: list[QueryExample] = []
    batch = 256
    with progress_bar("ranker examples", total=len(users), enabled=show_progress) as advance:
        for start in range(0, len(users), batch):
            chunk = users[start : start + batch]
            contexts = [view.context(user_id=u) for u in chunk]
            vectors = view.user_vectors([c.state for c in contexts])
            for user, context, vector in zip(chunk, contexts, vectors, strict=True):
                cands = view.candidates(context, vector)
                rows = {view.catalog.row_of[i] for i in relevant[user] if i in view.catalog.row_of}
                labels = np.array([1.0 if r in rows else 0.0 for r in cands.item_rows.tolist()], dtype=np.float32)
                out.append(QueryExample(user, context, cands, feature_matrix(view, context, cands), labels))
            advance(len(chunk))
    return out


def train_ranker(examples: list[QueryExample], config: RankerConfig | None = None) -> LearnedRanker:
    """LambdaRank on the queries that have at least one positive among their candidates."""
    queries = [(e.features, e.labels) for e in examples if e.labels.any() and len(e.labels) > 1]
    if not queries:
        raise DataError(f"the ranker has nothing to learn from: none of {len(examples)} held-out baskets has a bought item "
                        "among two or more candidates of its user (a catalog too small, or baskets of items never seen before)")
    return _fit_queries(queries, config or RankerConfig())


def train_discover_ranker(examples: list[QueryExample], config: RankerConfig | None = None) -> LearnedRanker | None:
    """The "discover" shelf's ranker: the same features, learned only on the candidates each user
    never bought, labelled by the new items of their basket. The main ranker's order among new
    items is shaped by re-buys (most of its positives); this one learns what predicts a first
    purchase. None when no query has a new positive."""
    new = RANKING_FEATURES.index("new_to_user")
    queries = []
    for e in examples:
        keep = e.features[:, new] > 0
        if keep.sum() > 1 and e.labels[keep].any():
            queries.append((e.features[keep], e.labels[keep]))
    if len(queries) < 2:
        return None
    return _fit_queries(queries, config or RankerConfig(objective="binary"))


def _fit_queries(queries: list[tuple[np.ndarray, np.ndarray]], config: RankerConfig) -> LearnedRanker:
    """One LightGBM model over (features, labels) query groups."""
    features = np.concatenate([f for f, _ in queries])
    labels = np.concatenate([y for _, y in queries])
    groups = np.array([len(y) for _, y in queries])
    return LearnedRanker(RANKING_FEATURES, config).fit(features, labels, groups)
