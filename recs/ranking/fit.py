"""Training the ranking stage on a held-out basket the towers never trained on.

Users are split in three: the cross-encoder learns on half A; the second-stage ranker, which turns
the cross-encoder's score into the final order, learns on group B, where that score is out of
sample (otherwise it would learn to trust an over-fitted score); group C, seen by no model, decides
the default R: the R among `rerank_choices` whose reranked order has the best NDCG@10 there, or 0
(no reranking) when no R's gain over the first stage is above `min_rerank_gain` at the one-sided 95%
lower bound of the paired per-query differences. A cross-encoder that does not
help is then never paid for by default. The first-stage ranker learns on A and B (on all queries when
no cross-encoder is trained), and so does the discover ranker (the `--novelty` shelf's order).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recs.progress import progress_bar
from recs.ranking.config import RankingConfig
from recs.ranking.cross_encoder import (
    CrossEncoderModel,
    CrossEncoderReranker,
    RerankQuery,
)
from recs.ranking.pipeline import (
    STAGE2_FEATURES,
    cross_encoder_texts,
    serving_order,
    stage2_input,
)
from recs.ranking.ranker import LearnedRanker
from recs.ranking.training import (
    QueryExample,
    query_examples,
    serving_view,
    train_discover_ranker,
    train_ranker,
)
from recs.retrieval.metrics import ndcg_from_hits
from recs.retrieval.retriever import Retriever


@dataclass
class RankingModels:
    ranker: LearnedRanker | None = None
    cross_encoder: CrossEncoderReranker | None = None
    stage2: LearnedRanker | None = None
    report: dict = field(default_factory=dict)
    discover: LearnedRanker | None = None


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
    use_cross_encoder = config.train_cross_encoder and len(with_positive) >= 10
    group_c: list[QueryExample] = []
    if use_cross_encoder:
        rng = np.random.default_rng(config.ranker.seed)
        shuffled = rng.permutation(len(with_positive))
        n_c = min(int(len(shuffled) * config.decision_share), config.decision_max_queries)
        group_c = [with_positive[i] for i in shuffled[:n_c]]
        rest = shuffled[n_c:]
        group_a = [with_positive[i] for i in rest[: len(rest) // 2]]
        group_b = [with_positive[i] for i in rest[len(rest) // 2 :]][: config.stage2_max_queries]
    if config.train_ranker and with_positive:
        # Group C stays out of every model, the first-stage ranker included, so that the choice of
        # R compares out-of-sample orders (an in-sample first stage would bias it).
        held_out = {id(e) for e in group_c}
        trainable = [e for e in examples if id(e) not in held_out]
        models.ranker = train_ranker(trainable, config.ranker)
        report["ranker"] = {"best_iteration": models.ranker.best_iteration, **models.ranker.metrics,
                            "importance": models.ranker.feature_importance()}
        if config.train_discover:
            models.discover = train_discover_ranker(trainable, config.discover)
            if models.discover is not None:
                report["discover"] = {"best_iteration": models.discover.best_iteration, **models.discover.metrics}
    report["ranker_seconds"] = time.monotonic() - started
    if not use_cross_encoder:
        return models
    first_a = _first_stage(group_a, models.ranker)
    queries = []
    for example, scores in zip(group_a, first_a, strict=True):
        order = np.lexsort((example.candidates.item_rows, -scores))
        rows = np.unique(np.concatenate([order[: config.ce_candidates], np.flatnonzero(example.labels > 0)]))
        queries.append(RerankQuery(example.context.state.text,
                                   cross_encoder_texts(view, example.candidates, example.features, rows), example.labels[rows]))
    towers = retriever.torch_towers()
    model = CrossEncoderModel(copy.deepcopy(towers.model.item_backbone))
    reranker = CrossEncoderReranker(model, towers.tokenizer, config.cross_encoder)
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
            xs.append(stage2_input(example.features[top], scores[top], ce))
            ys.append(labels)
            groups.append(len(top))
    if len(groups) >= 5:
        stage2_config = config.ranker.model_copy(update={"min_data_in_leaf": 10, "num_leaves": 15})
        models.stage2 = LearnedRanker(STAGE2_FEATURES, stage2_config).fit(np.concatenate(xs), np.concatenate(ys), np.array(groups))
        report["stage2"] = {"queries": len(groups), **models.stage2.metrics, "importance": models.stage2.feature_importance()}
    report["rerank_decision"] = choose_rerank_top(view, group_c, models, config, show_progress)
    report["seconds"] = time.monotonic() - started
    return models


def choose_rerank_top(view: Retriever, queries: list[QueryExample], models: RankingModels, config: RankingConfig,
                      show_progress: bool = False) -> dict:
    """NDCG@10 on held-out queries of the first stage and of the reranked order at each R in
    `rerank_choices`; the chosen default R (0: reranking does not pay)."""
    choices = sorted(r for r in config.rerank_choices if r > 1)
    if not queries or not choices or models.cross_encoder is None:
        return {"queries": len(queries), "default_rerank_top": 0, "reason": "no held-out queries or no cross-encoder"}
    first_all = _first_stage(queries, models.ranker)
    ndcg: dict[int, list[float]] = {0: [], **{r: [] for r in choices}}
    with progress_bar("choosing R", total=len(queries), enabled=show_progress) as advance:
        for example, first in zip(queries, first_all, strict=True):
            order = serving_order(example.candidates, first)
            top = order[: max(choices)]
            ce = models.cross_encoder.score(example.context.state.text,
                                            cross_encoder_texts(view, example.candidates, example.features, top))
            n_rel = np.array([int(example.labels.sum())])
            ndcg[0].append(float(ndcg_from_hits(example.labels[order][None, :10] > 0, n_rel, 10)[0]))
            for r in choices:
                head = top[:r]
                if models.stage2 is not None:
                    scores = models.stage2.predict(stage2_input(example.features[head], first[head], ce[:r]))
                else:
                    scores = ce[:r]
                reranked = np.concatenate([head[np.argsort(-scores, kind="stable")], order[r:]])
                ndcg[r].append(float(ndcg_from_hits(example.labels[reranked][None, :10] > 0, n_rel, 10)[0]))
            advance(1)
    means = {r: float(np.mean(v)) for r, v in ndcg.items()}
    # One-sided 95% lower bound of the paired per-query gain: a gain within noise (a few dozen
    # held-out queries) does not switch reranking on.
    lower = {r: _lower_bound(np.asarray(ndcg[r]) - np.asarray(ndcg[0])) for r in choices}
    best = max(choices, key=lambda r: (lower[r], -r))
    chosen = best if lower[best] > config.min_rerank_gain else 0
    return {"queries": len(queries), "ndcg@10_first_stage": means[0],
            **{f"ndcg@10_rerank_{r}": means[r] for r in choices},
            **{f"gain_lower_bound_{r}": lower[r] for r in choices}, "default_rerank_top": chosen}


def _lower_bound(differences: np.ndarray) -> float:
    if len(differences) < 2:
        return float(differences.mean()) if len(differences) else 0.0
    return float(differences.mean() - 1.645 * differences.std(ddof=1) / np.sqrt(len(differences)))
