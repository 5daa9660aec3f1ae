"""Baselines that run beside every model on the same split."""

from __future__ import annotations

from typing import Any

from recs.errors import ConfigError
from recs.evaluation.baselines.als import ALSRecommender
from recs.evaluation.baselines.bm25 import BM25Recommender
from recs.evaluation.baselines.cooc import CoocRecommender
from recs.evaluation.baselines.popularity import PopularityRecommender
from recs.evaluation.baselines.repeat import RepeatRecommender
from recs.evaluation.baselines.tifu_knn import TifuKnnRecommender
from recs.evaluation.baselines.upcf import UPCFRecommender
from recs.evaluation.recommender import Recommender

__all__ = [
    "BASELINES",
    "ALSRecommender",
    "BM25Recommender",
    "CoocRecommender",
    "PopularityRecommender",
    "RepeatRecommender",
    "TifuKnnRecommender",
    "UPCFRecommender",
    "make_baseline",
]

BASELINES: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        PopularityRecommender,
        RepeatRecommender,
        CoocRecommender,
        ALSRecommender,
        BM25Recommender,
        TifuKnnRecommender,
        UPCFRecommender,
    )
}


def make_baseline(name: str, **params: Any) -> Recommender:
    """A fresh, unfitted baseline by method name; `params` go to its constructor."""
    cls = BASELINES.get(name)
    if cls is None:
        raise ConfigError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")
    unknown = set(params) - set(cls.param_names) - {"unknown_user"}
    if unknown:
        raise ConfigError(
            f"baseline {name!r}: unknown parameter(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(cls.param_names) or 'none'}, unknown_user)"
        )
    return cls(**params)
