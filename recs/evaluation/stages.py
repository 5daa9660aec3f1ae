"""The engine's stages trained the way the held-out protocol needs them, shared by `recs benchmark`
(`recs.evaluation.shop_benchmark`) and `benchmarks/rerank.py`.

Split: next-basket leave-last-out; each user's last basket is the test target, the one before it
the validation target. The towers train on `split.tune_events` (early-stopped on the validation
baskets); the ranking stage (ranker, discover ranker, cross-encoder, second stage, default R)
learns on the validation baskets with the history before them; every method is then scored on the
test baskets, which no model saw.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recs.config import RecsConfig
from recs.data.requirements import require_held_out, require_items
from recs.data.schema import Dataset
from recs.data.splits import Split, leave_last_out
from recs.errors import ConfigError
from recs.evaluation.protocol import DISCOVER_SLICE, evaluate
from recs.evaluation.recommender import Recommender
from recs.ranking.fit import RankingModels, fit_ranking
from recs.ranking.pipeline import RankingPipeline
from recs.retrieval.retriever import Retriever

__all__ = ["TrainedStages", "budgeted_config", "fit_stages", "method_rows", "split_for_benchmark"]


@dataclass
class TrainedStages:
    retriever: Retriever
    models: RankingModels
    pipeline: RankingPipeline
    towers_seconds: float
    ranking_seconds: float

    @property
    def default_rerank_top(self) -> int:
        """The R the ranking stage chose on held-out users (0: the learned ranker's order)."""
        decision = self.models.report.get("rerank_decision") or {}
        return int(decision.get("default_rerank_top", 0))

    def notes(self) -> str:
        report = self.models.report
        ce = self.models.cross_encoder.report if self.models.cross_encoder and self.models.cross_encoder.report else None
        trained = f"{ce.steps} steps, valid NDCG@10 {ce.best_metric:.3f}" if ce else "not trained"
        return (f"towers {self.towers_seconds:.0f}s; ranking trained on validation baskets in {self.ranking_seconds:.0f}s: "
                f"{report.get('queries_with_positive')} queries with a positive of {report.get('queries')}; "
                f"cross-encoder {trained}")


def split_for_benchmark(dataset: Dataset, max_test_users: int | None = None, seed: int = 0) -> Split:
    """Leave-last-out, with at most `max_test_users` test users (a seeded sample: every method is
    scored on the same users). DataError when no user has a basket to hold out."""
    if max_test_users is not None and max_test_users < 1:
        raise ConfigError(f"max_test_users must be positive, got {max_test_users}")
    require_items(dataset.items, "recs benchmark")
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    require_held_out(split, "recs benchmark", validation=True)
    users = split.test["user_id"].unique().sort()
    if max_test_users is not None and users.len() > max_test_users:
        sample = users.sample(max_test_users, seed=seed).implode()
        split = dataclasses.replace(split, test=split.test.filter(pl.col("user_id").is_in(sample)))
    return split


def budgeted_config(config: RecsConfig, max_minutes: float | None, towers_share: float = 0.5,
                    cross_encoder_share: float = 0.25) -> RecsConfig:
    """`config` with an overall time budget split between tower training and the cross-encoder
    (the rest is left to the learned rankers, the baselines and the evaluation). A smaller limit
    already in the config is kept. None: the config unchanged."""
    if max_minutes is None:
        return config
    if max_minutes <= 0:
        raise ConfigError(f"max_minutes must be positive, got {max_minutes}")

    def capped(own: float | None, share: float) -> float:
        return min(own, max_minutes * share) if own is not None else max_minutes * share

    train = config.retrieval.train.model_copy(update={"max_minutes": capped(config.retrieval.train.max_minutes, towers_share)})
    cross = config.ranking.cross_encoder
    cross = cross.model_copy(update={"max_minutes": capped(cross.max_minutes, cross_encoder_share)})
    return config.model_copy(update={
        "retrieval": config.retrieval.model_copy(update={"train": train}),
        "ranking": config.ranking.model_copy(update={"cross_encoder": cross}),
    })


def fit_stages(split: Split, items: pl.DataFrame, config: RecsConfig, work: Path, show_progress: bool = True,
               retriever: Retriever | None = None) -> TrainedStages:
    """Towers on the tune split (unless `retriever` is given: trained on it already), then the
    ranking stage on the validation baskets. `work` holds the trainers' checkpoints."""
    started = time.perf_counter()
    if retriever is None:
        retriever = Retriever.fit(split.tune_events, items, config.retrieval, Path(work) / "towers",
                                  valid_targets=split.valid, show_progress=show_progress)
    towers_s = time.perf_counter() - started
    started = time.perf_counter()
    models = fit_ranking(retriever, split.tune_events, split.valid, config.ranking, Path(work) / "ranking",
                         show_progress=show_progress)
    pipeline = RankingPipeline(retriever, models.ranker, models.cross_encoder, models.discover)
    return TrainedStages(retriever, models, pipeline, towers_s, time.perf_counter() - started)


def method_rows(
    dataset: str, method: str, recommender: Recommender, split: Split, items: pl.DataFrame, ks: Sequence[int],
    slices: Sequence[str], notes: str, *, discover: Recommender | None = None, slice_suffix: str = "",
    extra: dict[str, float] | None = None, per_user: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Fit `recommender` on `split.fit_events`, score it on the test baskets, and return its rows
    (the results format); `discover` (the method's shelf without bought items) adds the
    DISCOVER_SLICE row. `extra` metrics join the `all` row; `per_user` gets slice -> user -> NDCG@10."""
    began = time.perf_counter()
    recommender.fit(split.fit_events, items)
    results = evaluate(recommender, split, items, ks=ks, slices=slices, per_user=per_user)
    if discover is not None:
        discover.fit(split.fit_events, items)
        results[DISCOVER_SLICE] = evaluate(discover, split, items, ks=ks, slices=("new_to_user",),
                                           exclude_bought=True)["new_to_user"]
    took = time.perf_counter() - began
    return [{"dataset": dataset, "method": method, "slice": name + slice_suffix,
             "metrics": {**metrics, **(extra or {})} if name == "all" else metrics,
             "notes": f"{notes}; evaluated in {took:.0f}s"} for name, metrics in results.items()]
