"""The ranking pipeline: candidates -> learned ranker -> cross-encoder on the top R (the top R
reordered by ranker logit + cross-encoder score, a residual it was trained as) -> filters ->
diversity -> top k.

If the cross-encoder cannot finish inside the request's time budget (counted from the start of
`rank`; how it is held: `recs.ranking.budget`), the learned ranker's order is returned and the
result is flagged `degraded`. Every stage's score is kept on every item.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from recs.artifacts import Artifact, ArtifactWriter
from recs.errors import ArtifactError
from recs.protocols import PairScorer, Ranker
from recs.ranking.config import RankOptions
from recs.ranking.diversity import cap_per_category, mmr
from recs.ranking.explain import reason
from recs.ranking.features import RANKING_FEATURES, feature_matrix
from recs.ranking.relation import relation_words
from recs.retrieval.candidates import CandidateSet
from recs.retrieval.filters import Filters
from recs.retrieval.retriever import Retriever, UserContext

# The pipeline's LightGBM models: attribute names, and their component / ONNX graph names.
RANKER_NAMES: tuple[str, ...] = ("ranker", "discover")
# The second-stage LightGBM of older artifacts: ignored when read, removed when the ranking is saved.
LEGACY_RANKER_NAMES: tuple[str, ...] = ("stage2",)
_TOUCHED = RANKING_FEATURES.index("times_interacted")


# The serving defaults live in their own component, written with every ranking save and copied
# by the ONNX export, so that both loaders read the same file.
RANK_OPTIONS_COMPONENT = "rank_options"
RANK_OPTIONS_FILE = "rank_options.json"


def write_rank_options(writer: ArtifactWriter, options: RankOptions) -> None:
    if RANK_OPTIONS_COMPONENT in writer.components:
        writer.remove_component(RANK_OPTIONS_COMPONENT)
    writer.write_json(RANK_OPTIONS_FILE, options.model_dump(mode="json"))
    writer.add_component(RANK_OPTIONS_COMPONENT, "rank_options", files=[RANK_OPTIONS_FILE])


def read_rank_options(artifact: Artifact) -> RankOptions:
    """The saved serving defaults; RankOptions() when none were saved."""
    if not artifact.has_component(RANK_OPTIONS_COMPONENT):
        # Artifacts before the component kept them with the main ranker.
        saved = artifact.component("ranker").config.get("options") if artifact.has_component("ranker") else None
        return RankOptions.parse_dict(saved, source=f"{artifact.path}/manifest.json") if saved else RankOptions()
    return RankOptions.parse_dict(artifact.read_json(RANK_OPTIONS_FILE), source=f"{artifact.path}/{RANK_OPTIONS_FILE}")


@dataclass
class RankedItem:
    row: int
    score: float
    stages: dict[str, float]
    reason: str
    features: dict[str, float] = field(default_factory=dict)


@dataclass
class RankedList:
    items: list[RankedItem]
    degraded: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)


def serving_order(cands: CandidateSet, scores: np.ndarray) -> np.ndarray:
    """Candidate positions best first; ties (a tree ranker gives many) go to the two-tower score,
    then the item."""
    return np.lexsort((cands.item_rows, -cands.features["two_tower_score"], -scores))


def residual_scores(first: np.ndarray, cross_encoder: np.ndarray) -> np.ndarray:
    """The served score of reranked items: the first stage's raw logit plus the CE's logit."""
    return first.astype(np.float64) + cross_encoder.astype(np.float64)


def residual_order(order: np.ndarray, first: np.ndarray, cross_encoder: np.ndarray) -> np.ndarray:
    """`order` (serving order) with its first len(cross_encoder) positions, scored `cross_encoder`,
    reordered by `residual_scores` (stable: ties keep the serving order); the rest unchanged. The
    reranked head stays above the rest: the CE's level is not identified by its listwise loss (a
    constant added to a list's scores changes no softmax), so it cannot be compared with an
    unscored item."""
    head = order[: len(cross_encoder)]
    combined = residual_scores(first[head], cross_encoder)
    return np.concatenate([head[np.argsort(-combined, kind="stable")], order[len(cross_encoder) :]])


def cross_encoder_texts(retriever: Retriever, cands: CandidateSet, features: np.ndarray, rows: np.ndarray) -> list[str]:
    out = []
    for j in rows.tolist():
        f = cands.features
        relation = relation_words(
            float(f["times_bought"][j]), float(f["days_since_bought"][j]),
            float(f["rebuy_interval_days"][j]), float(features[j, _TOUCHED]),
        )
        out.append(f"{retriever.catalog.texts[int(cands.item_rows[j])]} | {relation}")
    return out


class RankingPipeline:
    def __init__(
        self,
        retriever: Retriever,
        ranker: Ranker | None = None,
        cross_encoder: PairScorer | None = None,
        discover: Ranker | None = None,
    ) -> None:
        for model, names in ((ranker, RANKING_FEATURES), (discover, RANKING_FEATURES)):
            if model is not None and tuple(model.feature_names) != names:
                raise ArtifactError("the ranker was trained on other features (an older recs): run `recs train-ranker` again")
        self.retriever = retriever
        self.ranker = ranker
        self.cross_encoder = cross_encoder
        self.discover = discover  # orders the novelty ("discover") shelf; the ranker does without it

    def rankers(self) -> dict[str, Ranker]:
        """The trained LightGBM models by RANKER_NAMES name (what is saved and exported)."""
        return {name: getattr(self, name) for name in RANKER_NAMES if getattr(self, name) is not None}

    def first_stage(self, context: UserContext, vector: np.ndarray | None, filters: Filters,
                    novelty: bool = False) -> tuple[CandidateSet, np.ndarray, np.ndarray]:
        """Candidates, their feature matrix and first-stage scores (ranker, or RRF without one);
        `novelty` scores with the discover ranker where there is one."""
        cands = self.retriever.candidates(context, vector, filters)
        features = feature_matrix(self.retriever, context, cands)
        ranker = self.discover if novelty and self.discover is not None else self.ranker
        # The ranker learned from users with a history; someone known only by a text or a session
        # has none of its signals, so the retrieval order (led by the two-tower) serves them better.
        if ranker is not None and context.interactions:
            scores = ranker.predict(features)
        else:
            scores = cands.merged_score.astype(np.float32)
        return cands, features, scores

    def rank(
        self, context: UserContext, vector: np.ndarray | None, filters: Filters, k: int, options: RankOptions | None = None
    ) -> RankedList:
        options = options or RankOptions()
        timings: dict[str, float] = {}
        started = time.monotonic()
        if options.novelty:
            filters = replace(filters, exclude_bought=True)
        cands, features, first = self.first_stage(context, vector if context.known else None, filters, options.novelty)
        timings["ranker"] = (time.monotonic() - started) * 1000
        order = serving_order(cands, first)
        final = first.astype(np.float64).copy()
        ce_scores = np.full(len(cands), np.nan)
        combined = np.full(len(cands), np.nan)
        degraded = False
        top = order[: options.rerank_top]
        # The cross-encoder is a residual on the main ranker's logit; the discover shelf is ordered
        # by its own ranker, so it is not reranked.
        discover_shelf = options.novelty and self.discover is not None
        # The CE's residual was learned on the first stage's score of users with a history (the
        # ranker's logit where there is a ranker); on another scale the sum means nothing.
        same_base = self.ranker is None or bool(context.interactions)
        if (options.rerank and self.cross_encoder is not None and len(top) > 1 and context.known and same_base
                and not discover_shelf):
            deadline = None if options.time_budget_ms is None else started + options.time_budget_ms / 1000.0
            ce_start = time.monotonic()
            scored = self.cross_encoder.score(context.state.text, cross_encoder_texts(self.retriever, cands, features, top), deadline)
            timings["cross_encoder"] = (time.monotonic() - ce_start) * 1000
            if scored is None:
                degraded = True
            else:
                ce_scores[top] = scored
                combined[top] = residual_scores(first[top], scored)
                order = residual_order(order, first, scored)
                # The top R is scored by the sum; the rest, below it (see residual_order), keeps
                # the ranker's differences, moved down so that scores follow the served order.
                rest = order[len(top) :]
                final[top] = combined[top]
                if len(rest):
                    final[rest] += combined[top].min() - final[rest].max() - 1.0
        chosen = order
        if options.diversity > 0:
            window = order[: max(k * 5, 50)]
            picked = mmr(final[window], self.retriever.item_vectors[cands.item_rows[window]], min(k * 3, len(window)), 1.0 - options.diversity)
            chosen = window[picked]
        if options.category_cap is not None:
            categories = [self.retriever.categories[int(r)] for r in cands.item_rows]
            chosen = np.asarray(cap_per_category(chosen.tolist(), categories, options.category_cap), dtype=np.int64)
        items = []
        for j in chosen[:k].tolist():
            stages = {"retrieval_rrf": float(cands.merged_score[j]), "ranker": float(first[j])}
            if not np.isnan(ce_scores[j]):
                stages["cross_encoder"] = float(ce_scores[j])
                stages["ranker+cross_encoder"] = float(combined[j])
            items.append(RankedItem(
                row=int(cands.item_rows[j]), score=float(final[j]), stages=stages,
                reason=reason(self.retriever, context, cands, j),
                features={name: float(features[j, i]) for i, name in enumerate(RANKING_FEATURES)},
            ))
        timings["total"] = (time.monotonic() - started) * 1000
        return RankedList(items, degraded, timings)
