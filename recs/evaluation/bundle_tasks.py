"""Composed bundles against what customers bought together: the tasks `anchor_bundle` and
`user_bundle` (benchmarks/bundles.py on each shop).

Queries: each held-out basket of a split (a user's last basket; the user's history is what came
before it) with at least 3 catalog items. `anchor_bundle` takes one of its items as the anchor
(seeded) and composes bundles around it; `user_bundle` composes bundles for the user alone. The
budget is the anchor's price plus 3 typical items (the median price of the stocked catalog), or 4
typical items without an anchor. Every method returns up to `n` bundles of size 2-4 under the
same constraints (budget, in stock, one item per leaf category, no two bundles sharing more than
one added item), scored against the rest of that basket:
- `precision`: share of a bundle's added items bought in the basket, mean over the bundles;
- `hit_rate`: share of the bundles with at least one added item bought in the basket;
- `pair_ndcg`: NDCG over the ranked bundles, a bundle's gain = the share of its item pairs
  (anchor pairs included) bought together in the basket, ideal = n bundles of gain 1.
A query with no bundle scores 0 on all three; every returned bundle is checked against the
constraints (`constraint_satisfaction`, which must be 1).

Baselines go through the same composer (`recs.bundling.composer.compose`: constraints, beam search,
distinct bundles) with their own candidates and a set score = the mean item score of the added
items, so only what each method knows differs: `cooc` (co-purchase counts with the anchor, or with
the user's history), `item_similarity` (cosine with the anchor's vector, or the history's mean),
`tifu_knn` and `repeat` (the user's most likely next items), `untrained` (the engine's composer
with an untrained set scorer). Popularity breaks ties and fills short lists.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from recs.bundling.basket_queries import (
    BUNDLE_METRICS,
    BUNDLE_TASKS,
    SIZE,
    BundleQuery,
    bundle_queries,
    score_bundles,
)
from recs.bundling.composer import ItemTable, check_bundle, compose
from recs.bundling.config import ComposeConfig
from recs.bundling.cooc import CoocStats
from recs.bundling.sets import collect_sets
from recs.evaluation.paired import paired_difference

if TYPE_CHECKING:
    from recs.bundling.bundler import Bundler

__all__ = [
    "BUNDLE_METRICS",
    "BUNDLE_TASKS",
    "BundleQuery",
    "bundle_queries",
    "composed_with_scores",
    "evaluate_bundle_method",
    "score_bundles",
]

N_CANDIDATES = 50  # a baseline's candidates: its top items


# A method: one query -> its bundles (tuples of catalog rows, anchor included), best first.
BundleMethod = Callable[[BundleQuery], Sequence[Sequence[int]]]


def composed_with_scores(
    table: ItemTable,
    query: BundleQuery,
    item_scores: np.ndarray,
    popularity: np.ndarray,
    n: int,
    beam_width: int = 10,
    max_overlap: float = 0.5,
    max_shared: int = 1,
) -> list[tuple[int, ...]]:
    """A baseline's bundles: its top `N_CANDIDATES` items (by `item_scores`, popularity breaking
    ties) through the composer, a set scoring the mean item score of its added items."""
    scores = np.asarray(item_scores, np.float64)
    pop = np.asarray(popularity, np.float64)
    tie = 1e-6 * pop / max(1.0, float(pop.max()) if len(pop) else 1.0)
    ranked = np.where(np.isfinite(scores), scores, 0.0) + tie
    if query.anchor is not None:
        ranked[query.anchor] = -np.inf
    k = min(N_CANDIDATES, len(ranked) - (query.anchor is not None))
    if k <= 0:
        return []
    top = np.argpartition(-ranked, k - 1)[:k]
    anchors = {query.anchor} if query.anchor is not None else set()

    def score_sets(states: list[tuple[int, ...]]) -> np.ndarray:
        return np.array([np.mean([ranked[r] for r in s if r not in anchors]) if len(s) > len(anchors) else 0.0
                         for s in states])

    result = compose(table, top.tolist(), query.constraints(table), score_sets, n=n, beam_width=beam_width,
                     max_overlap=max_overlap, max_shared=max_shared)
    return [b.rows for b in result.bundles]


def evaluate_bundle_method(
    method: BundleMethod, queries: Sequence[BundleQuery], table: ItemTable, n: int,
    advance: Callable[[int], Any] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean metrics with constraint_satisfaction, bundles, mean_size; per-query metrics by key)."""
    per_query: dict[str, dict[str, float]] = {}
    n_bundles = n_ok = size = 0
    for query in queries:
        bundles = [tuple(int(r) for r in b) for b in method(query)][:n]
        per_query[query.key] = score_bundles(bundles, query, n)
        constraints = query.constraints(table)
        for bundle in bundles:
            n_bundles += 1
            size += len(bundle)
            n_ok += not check_bundle(bundle, table, constraints)
        if advance is not None:
            advance(1)
    metrics = {m: float(np.mean([q[m] for q in per_query.values()])) if per_query else 0.0 for m in BUNDLE_METRICS}
    metrics.update({
        "constraint_satisfaction": n_ok / n_bundles if n_bundles else 1.0,
        "bundles_per_query": n_bundles / max(1, len(queries)),
        "mean_size": size / max(1, n_bundles),
        "users": len(per_query),
    })
    return metrics, per_query


def paired_against(
    engine: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]], metric: str = "precision"
) -> dict[str, float]:
    """The engine's per-query `metric` minus a reference's: mean, 95% CI, ratio."""
    return paired_difference({k: v[metric] for k, v in engine.items()}, {k: v[metric] for k, v in reference.items()})


# ------------------------------------------------------------------------------------ methods


@dataclass
class BaselineData:
    """What the baselines read, all from the history before the test baskets."""

    table: ItemTable
    baskets: CoocStats  # co-purchase counts of the history's baskets
    popularity: np.ndarray  # per catalog row
    item_vectors: np.ndarray  # L2-normalised, catalog rows
    histories: dict[str, np.ndarray]  # user -> catalog rows bought before
    user_scores: dict[str, dict[str, np.ndarray]]  # "tifu_knn" / "repeat" -> user -> score per row

    def cooc(self, query: BundleQuery) -> np.ndarray:
        """Co-purchase counts with the anchor, or summed over the user's distinct history items."""
        seeds = [query.anchor] if query.anchor is not None else self.histories.get(query.user_id, np.zeros(0, np.int64))
        out = np.zeros(len(self.table), np.float64)
        summed = self.baskets.summed(seeds)
        out[summed.rows] = summed.values
        return out

    def similarity(self, query: BundleQuery) -> np.ndarray:
        """Cosine with the anchor's vector, or with the mean vector of the user's history."""
        if query.anchor is not None:
            return self.item_vectors @ self.item_vectors[query.anchor]
        history = self.histories.get(query.user_id, np.zeros(0, np.int64))
        if not len(history):
            return np.zeros(len(self.table))
        mean = self.item_vectors[np.unique(history)].mean(axis=0)
        return self.item_vectors @ (mean / max(float(np.linalg.norm(mean)), 1e-12))

    def user_list(self, name: str, query: BundleQuery) -> np.ndarray:
        return self.user_scores[name].get(query.user_id, np.zeros(len(self.table)))


def list_scores(item_ids: Sequence[str], row_of: Mapping[str, int], n_items: int) -> np.ndarray:
    """A ranked list as scores over the catalog: len(list) for the first item down to 1, 0 elsewhere."""
    out = np.zeros(n_items, np.float64)
    rows = [row_of[i] for i in item_ids if i in row_of]
    out[rows] = np.arange(len(rows), 0, -1, dtype=np.float64)
    return out


def fit_user_baselines(
    events: pl.DataFrame, items: pl.DataFrame, users: Sequence[str], row_of: Mapping[str, int]
) -> dict[str, dict[str, np.ndarray]]:
    """tifu_knn and repeat (recs.evaluation.baselines) fitted on `events`: each user's top items."""
    from recs.evaluation.baselines import RepeatRecommender, TifuKnnRecommender

    out: dict[str, dict[str, np.ndarray]] = {}
    for name, model in (("tifu_knn", TifuKnnRecommender()), ("repeat", RepeatRecommender())):
        lists = model.fit(events, items).recommend(list(users), k=N_CANDIDATES + 1)
        out[name] = {u: list_scores(ids, row_of, len(row_of)) for u, ids in zip(lists.user_ids, lists.item_ids, strict=True)}
    return out


def baseline_methods(data: BaselineData, n: int, config: ComposeConfig) -> dict[str, BundleMethod]:
    """cooc, item_similarity, tifu_knn, repeat: their scores through the same composer."""

    def through_composer(scores: Callable[[BundleQuery], np.ndarray]) -> BundleMethod:
        def method(query: BundleQuery) -> list[tuple[int, ...]]:
            return composed_with_scores(data.table, query, scores(query), data.popularity, n, config.beam_width,
                                        config.max_overlap, config.max_shared_items)
        return method

    return {
        "cooc": through_composer(data.cooc),
        "item_similarity": through_composer(data.similarity),
        "tifu_knn": through_composer(lambda q: data.user_list("tifu_knn", q)),
        "repeat": through_composer(lambda q: data.user_list("repeat", q)),
    }


def untrained_bundler(bundler: Bundler) -> Bundler:
    """The `untrained` method: the same retriever, statistics and composer, an untrained set
    scorer (the hand-set prior of scorer.py) and no item model."""
    from recs.bundling.bundler import Bundler
    from recs.bundling.scorer import SetScorer, SetScorerNet

    scorer, config = bundler.scorer, bundler.config
    net = SetScorerNet(scorer.item_vectors.shape[1], config.scorer)
    return Bundler(bundler.retriever, SetScorer(net, scorer.item_vectors, scorer.cooc, config.train.history_max_items,
                                                config.train.history_half_life), config, bundler.bundles)


def bundler_method(bundler: Bundler, n: int) -> BundleMethod:
    """The engine's composer (`Bundler.compose`) for a query: the user, their history, the anchor."""
    table = bundler.table

    def method(query: BundleQuery) -> list[tuple[int, ...]]:
        items = [table.item_ids[query.anchor]] if query.anchor is not None else []
        bundles = bundler.compose(query.user_id, items=items, size=SIZE, budget=query.budget, n=n)
        return [tuple(table.row_of[i] for i in b.item_ids) for b in bundles]

    return method


# ---------------------------------------------------------------------------------- the tasks


def bundle_task_rows(
    name: str,
    targets: pl.DataFrame,
    fit_events: pl.DataFrame,
    items: pl.DataFrame,
    bundler: Bundler,
    untrained: Bundler | None = None,
    *,
    n: int = 3,
    max_queries: int | None = 1000,
    seed: int = 0,
    notes: str = "",
    show_progress: bool = False,
    log: Callable[[str], None] = lambda _line: None,
    methods: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Both tasks on held-out `targets` (a Split's `test`), `bundler` trained on `fit_events`
    (`untrained`: default `untrained_bundler(bundler)`): result rows (dataset, method, slice = task, metrics, notes) for engine, cooc,
    item_similarity, tifu_knn, repeat, untrained. The engine row also holds its precision ratio
    to the best baseline and the paired 95% CI of the per-query difference (`ratio_vs_best`,
    `delta_ci_low`, `delta_ci_high`); its notes give the paired line against every method."""
    from recs.evaluation.paired import format_paired
    from recs.progress import progress_bar

    table = bundler.table
    retriever = bundler.retriever
    rows: list[dict[str, Any]] = []
    by_task = {task: bundle_queries(targets, table, task, seed=seed, max_queries=max_queries) for task in BUNDLE_TASKS}
    users = sorted({q.user_id for queries in by_task.values() for q in queries})
    if not users:
        log(f"[{name}] no held-out basket of 3+ catalog items")
        return rows
    # What the baselines read, once for both tasks.
    data = BaselineData(
        table=table,
        baskets=CoocStats.from_sets(collect_sets(table.row_of, fit_events, None).rows, len(table)),
        popularity=np.asarray(retriever.stats.popularity, np.float64),
        item_vectors=retriever.item_vectors,
        histories={u: retriever.context(user_id=u, policy="fallback").history.rows for u in users},
        user_scores=fit_user_baselines(fit_events, items, users, table.row_of),
    )
    every = {"engine": bundler_method(bundler, n), **baseline_methods(data, n, bundler.config.compose),
             "untrained": bundler_method(untrained or untrained_bundler(bundler), n)}
    chosen = {m: fn for m, fn in every.items() if methods is None or m in methods or m == "engine"}
    for task, queries in by_task.items():
        if not queries:
            log(f"[{name}] {task}: no held-out basket of 3+ catalog items")
            continue
        results: dict[str, tuple[dict[str, float], dict[str, dict[str, float]]]] = {}
        for method, fn in chosen.items():
            started = time.perf_counter()
            with progress_bar(f"{task} {method}", total=len(queries), enabled=show_progress) as advance:
                metrics, per_query = evaluate_bundle_method(fn, queries, table, n, advance)
            metrics["ms_per_query"] = 1000 * (time.perf_counter() - started) / len(queries)
            results[method] = (metrics, per_query)
            log(f"[{name}] {task} {method}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in (*BUNDLE_METRICS, "constraint_satisfaction"))
                + f", {metrics['bundles_per_query']:.2f} bundles/query of {metrics['mean_size']:.2f} items")
        paired = {m: paired_against(results["engine"][1], per_query) for m, (_, per_query) in results.items() if m != "engine"}
        best = max((m for m in paired if m != "untrained"), key=lambda m: results[m][0]["precision"], default="untrained")
        lines = [format_paired("engine", m, p) for m, p in paired.items()]
        for line in lines:
            log(f"[{name}] {task} precision: {line}")
        describe = (
            f"{len(queries)} held-out baskets of 3+ catalog items (each user's last; history = the events before it)"
            + ("; anchor = a seeded item of the basket, budget = its price + 3 x the median stocked price"
               if task == "anchor_bundle" else "; no anchor, budget = 4 x the median stocked price")
            + f"; n={n} bundles of size {SIZE[0]}-{SIZE[1]}, in stock, one item per leaf, <= 1 shared added item"
            + (f"; {notes}" if notes else "")
        )
        for method, (metrics, _) in results.items():
            row_notes = describe
            if method == "engine":
                p = paired[best]
                metrics = {**metrics, "ratio_vs_best": p["ratio"], "delta_ci_low": p["ci_low"], "delta_ci_high": p["ci_high"]}
                row_notes += f"; best baseline by precision: {best}; paired precision: " + "; ".join(lines)
            rows.append({"dataset": name, "method": method, "slice": task, "metrics": metrics, "notes": row_notes})
    return rows
