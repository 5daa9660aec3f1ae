"""Training the ranking stage on a held-out basket the towers never trained on.

Users with a positive among their candidates are split in two: group C, seen by no model, decides
the default R (the R among `rerank_choices` whose reranked order has the best NDCG@10 there, or 0
when no R's gain over the first stage is above `min_rerank_gain` at the one-sided 95% lower bound of
the paired per-query differences), so a cross-encoder that does not help is never paid for by
default. The first-stage ranker and the discover ranker learn on the rest (on all queries when no
cross-encoder is trained), and so does the cross-encoder: a residual on the ranker's raw logit,
trained on exactly the lists it serves (the first stage's top R_train in serving order, plus a few
random others) with the listwise loss of logit + CE score.

Out of fold: the ranker logits the CE's training lists carry come from `oof_folds` rankers, each
fitted on the other folds of the same users (with the served ranker's tree count, so the logits have
its scale). An in-sample logit is over-confident on its own training queries and would leave the CE
little to learn there that it could use when serving new users. K-fold costs K small LightGBM fits
(seconds), and lets the CE learn from every non-C user rather than half of them (the alternative,
a CE on group A scored by a ranker fitted on group B, halves the CE's data, the costly part).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recs.encoders.backbone import keep_first_layers
from recs.errors import DataError
from recs.progress import progress_bar
from recs.ranking.config import RankingConfig
from recs.ranking.cross_encoder import (
    CrossEncoderModel,
    CrossEncoderReranker,
    RerankQuery,
)
from recs.ranking.pipeline import cross_encoder_texts, residual_order, serving_order
from recs.ranking.ranker import LearnedRanker
from recs.ranking.training import (
    QueryExample,
    query_examples,
    serving_view,
    train_discover_ranker,
    train_ranker,
)
from recs.retrieval.metrics import Z_95_ONE_SIDED, ndcg_from_hits, paired_difference
from recs.retrieval.retriever import Retriever

# Fewer lists than this cannot both train a cross-encoder and choose R on held-out users.
MIN_CROSS_ENCODER_QUERIES = 10


@dataclass
class RankingModels:
    ranker: LearnedRanker | None = None
    cross_encoder: CrossEncoderReranker | None = None
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
    if config.train_ranker and not with_positive:
        raise DataError(f"the ranker has nothing to learn from: none of {len(examples)} held-out baskets has a bought item "
                        "among its user's candidates")
    use_cross_encoder = config.train_cross_encoder and len(with_positive) >= MIN_CROSS_ENCODER_QUERIES
    if config.train_cross_encoder and not use_cross_encoder:
        report["cross_encoder_skipped"] = (f"needs at least {MIN_CROSS_ENCODER_QUERIES} held-out baskets with a bought item "
                                           f"among the candidates, found {len(with_positive)}")
    group_c: list[QueryExample] = []
    group_train: list[QueryExample] = []  # the CE's users: every user with a positive outside C
    ce_model: CrossEncoderModel | None = None
    if use_cross_encoder:
        # Built before the rankers train: a backbone `layers` cannot cut (not BERT-family) fails in seconds.
        # The default depth is a ceiling any backbone may ignore; a depth the config sets must apply.
        ce_model = CrossEncoderModel(keep_first_layers(copy.deepcopy(retriever.torch_towers().model.item_backbone),
                                                       config.cross_encoder.layers,
                                                       required="layers" in config.cross_encoder.model_fields_set))
        rng = np.random.default_rng(config.ranker.seed)
        shuffled = rng.permutation(len(with_positive))
        n_c = min(int(len(shuffled) * config.decision_share), config.decision_max_queries)
        group_c = [with_positive[i] for i in shuffled[:n_c]]
        group_train = [with_positive[i] for i in shuffled[n_c:]]
    earlier: list[QueryExample] = []
    if config.train_ranker and with_positive:
        # Group C stays out of every model, the first-stage ranker included, so that the choice of
        # R compares out-of-sample orders (an in-sample first stage would bias it).
        # Group C's earlier baskets too: the decision is about their held-out basket.
        held_out_users = {e.user_id for e in group_c}
        earlier = earlier_examples(retriever, history_events, config, show_progress)
        report["earlier_queries"] = len(earlier)
        trainable = [e for e in examples + earlier if e.user_id not in held_out_users]
        models.ranker = train_ranker(trainable, config.ranker)
        report["ranker"] = {"best_iteration": models.ranker.best_iteration, **models.ranker.metrics,
                            "importance": models.ranker.feature_importance()}
        if config.train_discover:
            models.discover = train_discover_ranker(trainable, config.discover)
            if models.discover is not None:
                report["discover"] = {"best_iteration": models.discover.best_iteration, **models.discover.metrics}
    report["ranker_seconds"] = time.monotonic() - started
    if ce_model is None:  # no cross-encoder to train (built above exactly when there is one)
        return models
    r_train = config.resolved_ce_train_top()
    base = out_of_fold_scores(group_train, models.ranker, config)
    rng = np.random.default_rng([config.ranker.seed, 1])
    queries = []
    for example, scores in zip(group_train, base, strict=True):
        order = serving_order(example.candidates, scores)
        below = order[r_train:]
        extra = rng.choice(below, size=min(config.ce_extra_candidates, len(below)), replace=False) if len(below) else below
        rows = np.concatenate([order[:r_train], extra]).astype(np.int64)
        labels = example.labels[rows]
        if not labels.any():  # nothing to learn from a served list without a bought item
            continue
        # Relation words as of the cut-off: `view` serves from the history events only.
        queries.append(RerankQuery(example.context.state.text,
                                   cross_encoder_texts(view, example.candidates, example.features, rows), labels, scores[rows]))
    report["cross_encoder_queries"] = {"lists": len(queries), "train_top": r_train, "extra": config.ce_extra_candidates,
                                       "oof_folds": config.oof_folds if models.ranker is not None else 0}
    reranker = CrossEncoderReranker(ce_model, retriever.torch_towers().tokenizer, config.cross_encoder)
    reranker.fit(queries, work, show_progress=show_progress)
    models.cross_encoder = reranker
    report["cross_encoder"] = reranker.report.__dict__ if reranker.report else {}
    report["rerank_decision"] = choose_rerank_top(view, group_c, models, config, show_progress)
    if report["rerank_decision"].get("default_rerank_top", 0) == 0 and models.ranker is not None and group_c:
        # No reranking by default: group C has done its job, and the served rankers learn from
        # every user (the same rankers as a stage trained without a cross-encoder).
        everything = examples + earlier
        models.ranker = train_ranker(everything, config.ranker)
        if config.train_discover:
            models.discover = train_discover_ranker(everything, config.discover)
        report["ranker_refit_on_all"] = True
    report["seconds"] = time.monotonic() - started
    return models


def earlier_examples(retriever: Retriever, history_events: pl.DataFrame, config: RankingConfig,
                     show_progress: bool) -> list[QueryExample]:
    """Ranker examples from the baskets before the held-out one (`config.earlier_baskets` of them
    per user), each served from the history before it. None when the events carry no baskets."""
    from recs.data.splits import leave_last_out
    from recs.errors import DataError

    out: list[QueryExample] = []
    history = history_events
    for depth in range(config.earlier_baskets):
        try:
            split = leave_last_out(history)
        except DataError:  # no basket ids: nothing to cut at
            break
        if split.test.height == 0:
            break
        view = serving_view(retriever, split.fit_events)
        out += query_examples(view, split.test, config.ranker.n_candidates, config.ranker.max_users,
                              config.ranker.seed + depth + 1, show_progress)
        history = split.fit_events
    return out


def out_of_fold_scores(examples: list[QueryExample], ranker: LearnedRanker | None, config: RankingConfig) -> list[np.ndarray]:
    """Each example's first-stage raw logits from a ranker that did not train on it: `oof_folds`
    rankers, each fitted on the other folds with the served ranker's config and tree count (no
    early stopping), so that their logits are on the served scale. Without a ranker the first
    stage is the retrieval score, which no example trained. LambdaRank logits are only defined up
    to a per-query constant, which the listwise loss ignores too: only their spread must match."""
    if ranker is None:
        return _first_stage(examples, None)
    folds = np.random.default_rng([config.ranker.seed, 2]).permutation(len(examples)) % config.oof_folds
    fold_config = config.ranker.model_copy(update={"n_estimators": max(1, ranker.best_iteration), "valid_share": 0.0})
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(examples)
    for k in range(config.oof_folds):
        inside = np.flatnonzero(folds == k)
        outside = [examples[i] for i in np.flatnonzero(folds != k)]
        fold_ranker = train_ranker(outside, fold_config) if any(e.labels.any() for e in outside) else ranker
        for i in inside.tolist():
            out[i] = fold_ranker.predict(examples[i].features)
    return out


def choose_rerank_top(view: Retriever, queries: list[QueryExample], models: RankingModels, config: RankingConfig,
                      show_progress: bool = False) -> dict:
    """NDCG@10 on held-out queries of the first stage and of the served order at each R in
    `rerank_choices` (top R by ranker logit + CE score); the chosen default R (0: reranking does
    not pay). Also the paired delta of each R over the first stage with its 95% CI, on all
    relevant items and split into re-bought / new items (benchmarks/rerank.py adds the ROC AUC
    of each score on the top R: the curves belong to recs.evaluation, above this stage)."""
    choices = sorted(r for r in config.rerank_choices if r > 1)
    if not queries or not choices or models.cross_encoder is None:
        return {"queries": len(queries), "default_rerank_top": 0, "reason": "no held-out queries or no cross-encoder"}
    first_all = _first_stage(queries, models.ranker)
    kinds = ("all", "rebought", "new")
    ndcg: dict[str, dict[int, dict[str, float]]] = {kind: {r: {} for r in (0, *choices)} for kind in kinds}
    with progress_bar("choosing R", total=len(queries), enabled=show_progress) as advance:
        for i, (example, first) in enumerate(zip(queries, first_all, strict=True)):
            order = serving_order(example.candidates, first)
            top = order[: max(choices)]
            ce = models.cross_encoder.score(example.context.state.text,
                                            cross_encoder_texts(view, example.candidates, example.features, top))
            rebought = example.candidates.features["times_bought"] > 0
            relevant = {"all": example.labels > 0, "rebought": (example.labels > 0) & rebought,
                        "new": (example.labels > 0) & ~rebought}
            orders = {0: order, **{r: residual_order(order, first, ce[:r]) for r in choices}}
            for kind, rel in relevant.items():
                n_rel = np.array([int(rel.sum())])
                if not n_rel[0]:  # NDCG is undefined without a relevant item of this kind
                    continue
                for r, served in orders.items():
                    ndcg[kind][r][str(i)] = float(ndcg_from_hits(rel[served][None, :10], n_rel, 10)[0])
            advance(1)
    means = {r: float(np.mean(list(v.values()))) for r, v in ndcg["all"].items()}
    deltas = {f"delta_{kind}_{r}": paired_difference(ndcg[kind][r], ndcg[kind][0]) for kind in kinds for r in choices}
    # One-sided 95% lower bound of the paired per-query gain: a gain within noise (a few dozen
    # held-out queries) does not switch reranking on.
    lower = {r: paired_difference(ndcg["all"][r], ndcg["all"][0], z=Z_95_ONE_SIDED)["ci_low"] for r in choices}
    best = max(choices, key=lambda r: (lower[r], -r))
    chosen = best if lower[best] > config.min_rerank_gain else 0
    return {"queries": len(queries), "ndcg@10_first_stage": means[0],
            **{f"ndcg@10_rerank_{r}": means[r] for r in choices},
            **{f"gain_lower_bound_{r}": lower[r] for r in choices}, **deltas,
            "default_rerank_top": chosen}
