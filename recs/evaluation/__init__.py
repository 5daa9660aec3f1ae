"""Evaluation: full-ranking metrics, the Recommender interface, baselines, adapters of the
engine's stages, protocol, runner, reports.

Importing this package registers every recommender (baselines and adapters) for
`Recommender.load`."""

from __future__ import annotations

from recs.evaluation.adapters import (
    CandidatesRecommender,
    EngineRecommender,
    RankerRecommender,
    TwoTowerRecommender,
    ZeroShotRecommender,
)
from recs.evaluation.baselines import (
    BASELINES,
    ALSRecommender,
    BM25Recommender,
    CoocRecommender,
    PopularityRecommender,
    RepeatRecommender,
    TifuKnnRecommender,
    UPCFRecommender,
    make_baseline,
)
from recs.evaluation.metrics import (
    coverage,
    hit_matrix,
    hit_rate_at_k,
    intra_list_diversity,
    mean_ranking_metrics,
    mrr,
    ndcg_at_k,
    popularity_bias,
    popularity_percentiles,
    recall_at_k,
)
from recs.evaluation.protocol import DISCOVER_SLICE, SLICES, evaluate
from recs.evaluation.recommender import (
    RecommendationLists,
    Recommender,
    UnknownUserPolicy,
    registered_recommenders,
)
from recs.evaluation.report import format_table, plot_metrics, write_results
from recs.evaluation.runner import evaluate_baselines
from recs.evaluation.tuning import DEFAULT_SEARCHES, tune, tune_als

__all__ = [
    "BASELINES",
    "DEFAULT_SEARCHES",
    "DISCOVER_SLICE",
    "SLICES",
    "ALSRecommender",
    "BM25Recommender",
    "CandidatesRecommender",
    "CoocRecommender",
    "EngineRecommender",
    "PopularityRecommender",
    "RankerRecommender",
    "RecommendationLists",
    "Recommender",
    "RepeatRecommender",
    "TifuKnnRecommender",
    "TwoTowerRecommender",
    "UPCFRecommender",
    "UnknownUserPolicy",
    "ZeroShotRecommender",
    "coverage",
    "evaluate",
    "evaluate_baselines",
    "format_table",
    "hit_matrix",
    "hit_rate_at_k",
    "intra_list_diversity",
    "make_baseline",
    "mean_ranking_metrics",
    "mrr",
    "ndcg_at_k",
    "plot_metrics",
    "popularity_bias",
    "popularity_percentiles",
    "recall_at_k",
    "registered_recommenders",
    "tune",
    "tune_als",
    "write_results",
]
