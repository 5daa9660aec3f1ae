"""Training the ranking stage on a held-out basket the towers never trained on.

Users are split in two: the cross-encoder learns on half A; the second-stage ranker, which turns
the cross-encoder's score into the final order, learns on half B, where that score is out of
sample (otherwise it would learn to trust an over-fitted score). The first-stage ranker learns on all.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recs.config import StrictModel
from recs.progress import progress_bar
from recs.ranking.cross_encoder import (
    CrossEncoderConfig,
    CrossEncoderModel,
    CrossEncoderReranker,
    RerankQuery,
)
from recs.ranking.pipeline import STAGE2_FEATURES, RankOptions, cross_encoder_texts
from recs.ranking.ranker import LearnedRanker, RankerConfig
from recs.ranking.training import QueryExample, query_examples, serving_view, train_ranker
from recs.retrieval.retriever import Retriever


class RankingConfig(StrictModel):
    ranker: RankerConfig = RankerConfig()
    cross_encoder: CrossEncoderConfig = CrossEncoderConfig()
    options: RankOptions = RankOptions()
    train_ranker: bool = True
    train_cross_encoder: bool = True
    ce_candidates: int = 30  # hard candidates per query the cross-encoder learns from
    stage2_top: int = 50  # top of the first stage the second stage learns to reorder
    stage2_max_queries: int = 400  # each costs stage2_top cross-encoder passes


@dataclass
class RankingModels:
    ranker: LearnedRanker | None = None
    cross_encoder: CrossEncoderReranker | None = None
    stage2: LearnedRanker | None = None
    report: dict = field(default_factory=dict)


def _first_stage(examples: list[QueryExample], ranker: LearnedRanker | None) -> list[np.ndarray]:
    return [ranker.predict(e.features) if ranker is not None else e.candidates.merged_score for e in examples]


def fit_ranking(
    retriever: Retriever,
    history_events: pl.DataFrame,
    targets: pl.DataFrame,
    config: RankingConfig | None = None,
    work_dir: Path | None = None,
    show_progress: bool = True,
) -> RankingModels:
    config = config or RankingConfig()
    work = work_dir or Path(".recs-work")
    started = time.monotonic()
    view = serving_view(retriever, history_events)
    examples = query_examples(view, targets, config.ranker.n_candidates, config.ranker.max_users, config.ranker.seed, show_progress)
    with_positive = [e for e in examples if e.labels.any()]
    report: dict = {"queries": len(examples), "queries_with_positive": len(with_positive),
                    "candidate_recall": float(np.mean([e.labels.sum() > 0 for e in examples])) if examples else 0.0}
    models = RankingModels(report=report)
    if config.train_ranker and with_positive:
        models.ranker = train_ranker(examples, config.ranker)
        report["ranker"] = {"best_iteration": models.ranker.best_iteration, **models.ranker.metrics,
                            "importance": models.ranker.feature_importance()}
    report["ranker_seconds"] = time.monotonic() - started
    if not (config.train_cross_encoder and len(with_positive) >= 10):
        return models
    rng = np.random.default_rng(config.ranker.seed)
    half = rng.permutation(len(with_positive))
    group_a = [with_positive[i] for i in half[: len(half) // 2]]
    group_b = [with_positive[i] for i in half[len(half) // 2 :]][: config.stage2_max_queries]
    first_a = _first_stage(group_a, models.ranker)
    queries = []
    for example, scores in zip(group_a, first_a, strict=True):
        order = np.lexsort((example.candidates.item_rows, -scores))
        rows = np.unique(np.concatenate([order[: config.ce_candidates], np.flatnonzero(example.labels > 0)]))
        queries.append(RerankQuery(example.context.state.text,
                                   cross_encoder_texts(view, example.candidates, example.features, rows), example.labels[rows]))
    model = CrossEncoderModel(copy.deepcopy(retriever.model.item_backbone))
    reranker = CrossEncoderReranker(model, retriever.tokenizer, config.cross_encoder)
    reranker.fit(queries, work, show_progress=show_progress)
    models.cross_encoder = reranker
    report["cross_encoder"] = reranker.report.__dict__ if reranker.report else {}
    # Second stage on group B: the cross-encoder's scores there are out of sample.
    first_b = _first_stage(group_b, models.ranker)
    xs, ys, groups = [], [], []
    with progress_bar("second stage", total=len(group_b), enabled=show_progress) as advance:
        for example, scores in zip(group_b, first_b, strict=True):
            top = np.lexsort((example.candidates.item_rows, -scores))[: config.stage2_top]
            labels = example.labels[top]
            advance(1)
            if not labels.any() or labels.all():
                continue
            ce = reranker.score(example.context.state.text, cross_encoder_texts(view, example.candidates, example.features, top))
            xs.append(np.column_stack([example.features[top], scores[top], ce]).astype(np.float32))
            ys.append(labels)
            groups.append(len(top))
    if len(groups) >= 5:
        stage2_config = config.ranker.model_copy(update={"min_data_in_leaf": 10, "num_leaves": 15})
        models.stage2 = LearnedRanker(STAGE2_FEATURES, stage2_config).fit(np.concatenate(xs), np.concatenate(ys), np.array(groups))
        report["stage2"] = {"queries": len(groups), **models.stage2.metrics, "importance": models.stage2.feature_importance()}
    report["seconds"] = time.monotonic() - started
    return models
