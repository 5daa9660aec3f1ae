"""The evaluation protocol: next-basket prediction, full ranking over the catalog.

For each test user, the relevant set is the distinct items of their held-out basket. Items they
bought before are NOT excluded (re-buying is most of what shops see). Test items absent from the
fitted events stay in the relevant set: an ID-based model can only miss them, a text model may
hit them (that is the point of the `cold_items` slice). Slices:
- `all`: every relevant item;
- `new_to_user`: relevant items the user never purchased in `split.fit_events`;
- `cold_items`: relevant items in `split.cold_items` (absent from the fitted events).
A user whose relevant set is empty in a slice is skipped for that slice.

Running the baselines (tuned, then evaluated) is `recs.evaluation.runner.evaluate_baselines`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from recs.data.splits import Split
from recs.errors import ConfigError, DataError
from recs.evaluation.metrics import (
    coverage,
    hit_matrix,
    intra_list_diversity,
    mean_ranking_metrics,
    popularity_bias,
    popularity_percentiles,
)
from recs.evaluation.recommender import Recommender
from recs.retrieval.cooccurrence import purchase_popularity
from recs.retrieval.metrics import ndcg_from_hits

__all__ = ["DISCOVER_SLICE", "SLICES", "check_ks", "check_slices", "evaluate", "training_popularity"]

SLICES: tuple[str, ...] = ("all", "new_to_user", "cold_items")
# Rows of the `discover` shelf: the `new_to_user` slice scored on lists without the user's bought
# items, so every method answers the same question ("which new items will they buy").
DISCOVER_SLICE = "discover"


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Distinct positive cut-offs, ascending; ConfigError otherwise."""
    if isinstance(ks, (int, str)) or not len(ks):
        raise ConfigError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    out: set[int] = set()
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"every k must be a positive integer, got {k!r}")
        out.add(int(k))
    return tuple(sorted(out))


def check_slices(slices: Sequence[str]) -> tuple[str, ...]:
    """Distinct known slice names, in the given order; ConfigError otherwise."""
    if isinstance(slices, str) or not len(slices):
        raise ConfigError(f"slices must be a non-empty sequence of names, got {slices!r}")
    unknown = [s for s in slices if s not in SLICES]
    if unknown:
        raise ConfigError(
            f"unknown slice(s) {', '.join(map(repr, unknown))} (known: {', '.join(SLICES)})"
        )
    return tuple(dict.fromkeys(slices))


def training_popularity(fit_events: pl.DataFrame, item_ids: Sequence[str]) -> np.ndarray:
    """Purchase rows per catalog item in the fitted events (all events if there is no purchase)."""
    events = fit_events
    if "event" in events.columns and not events.filter(pl.col("event") == "purchase").height:
        events = events.drop("event")  # no purchase at all: every row counts as one
    return purchase_popularity(events, {item: row for row, item in enumerate(item_ids)}, len(item_ids))


def _relevant_sets(
    split: Split, users: list[str], slices: tuple[str, ...]
) -> dict[str, list[frozenset[str]]]:
    by_user = {
        u: frozenset(items)
        for u, items in split.test.group_by("user_id").agg(pl.col("item_id").unique()).iter_rows()
    }
    out: dict[str, list[frozenset[str]]] = {}
    for s in slices:
        if s == "all":
            out[s] = [by_user[u] for u in users]
        elif s == "new_to_user":
            fit = split.fit_events
            if "event" in fit.columns:
                fit = fit.filter(pl.col("event") == "purchase")
            bought = {
                u: set(items)
                for u, items in fit.filter(pl.col("user_id").is_in(users))
                .group_by("user_id")
                .agg(pl.col("item_id").unique())
                .iter_rows()
            }
            out[s] = [by_user[u] - bought.get(u, set()) for u in users]
        else:  # cold_items
            out[s] = [by_user[u] & split.cold_items for u in users]
    return out


def evaluate(
    model: Recommender,
    split: Split,
    items: pl.DataFrame,
    ks: Sequence[int] = (10, 50),
    slices: Sequence[str] = SLICES,
    batch_size: int = 1024,
    exclude_bought: bool = False,
    per_user: dict[str, dict[str, float]] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of a model already fitted on `split.fit_events`, per slice.

    `exclude_bought` scores the lists without the items each user bought (a "discover" shelf):
    with the `new_to_user` slice it asks every method the same question, "which new items".

    Returns slice -> {"recall@k", "ndcg@k", "mrr@k", "hit_rate@k", "coverage@k",
    "popularity_bias@k", "diversity@k" (only when items have categories), "users"} for each k.
    Each user is recommended once, with max(ks) items; every metric is computed from that list.
    A slice with no user has all metrics 0.0 and users 0. Test users the model does not know
    (cold users of a time split) follow its `unknown_user` policy: "raise" aborts the run.
    `per_user`, when given, is filled with slice -> {user_id: NDCG@10 (NDCG@min(ks) without 10)}
    for the paired comparisons of `recs.evaluation.paired`.
    """
    ks = check_ks(ks)
    slices = check_slices(slices)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if "item_id" not in items.columns:
        raise DataError("items: missing column 'item_id'")
    missing = {"user_id", "item_id"} - set(split.test.columns)
    if missing:
        raise DataError(f"split.test: missing column(s) {', '.join(sorted(missing))}")

    item_ids = items["item_id"].cast(pl.Utf8).to_list()
    users = sorted(split.test["user_id"].unique().to_list())
    k_max = max(ks)
    ranked: list[list[str]] = []
    for start in range(0, len(users), batch_size):
        ranked.extend(model.recommend(users[start : start + batch_size], k=k_max, exclude_bought=exclude_bought).item_ids)

    categories: dict[str, str] = {}
    if "category" in items.columns:
        categories = {
            i: c
            for i, c in items.select(pl.col("item_id").cast(pl.Utf8), "category").iter_rows()
            if c
        }
    percentile = dict(
        zip(
            item_ids,
            popularity_percentiles(training_popularity(split.fit_events, item_ids)),
            strict=True,
        )
    )

    out: dict[str, dict[str, float]] = {}
    for s, relevant in _relevant_sets(split, users, slices).items():
        counted = [r for r, rel in zip(ranked, relevant, strict=True) if rel]
        hits, n_rel = hit_matrix(ranked, relevant, k_max)
        metrics = mean_ranking_metrics(hits, n_rel, ks)
        if per_user is not None:
            k_paired = 10 if 10 in ks else ks[0]
            values = ndcg_from_hits(hits, n_rel, k_paired)
            kept = [u for u, rel in zip(users, relevant, strict=True) if rel]
            per_user[s] = dict(zip(kept, values.astype(float).tolist(), strict=True))
        for k in ks:
            metrics[f"coverage@{k}"] = coverage(counted, len(item_ids), k)
            metrics[f"popularity_bias@{k}"] = popularity_bias(counted, percentile, k)
            diversity = intra_list_diversity(counted, categories, k) if categories else None
            if diversity is not None:
                metrics[f"diversity@{k}"] = diversity
        users_counted = metrics.pop("users")
        out[s] = {**_ordered(metrics, ks), "users": users_counted}
    return out


_ORDER = ("recall", "ndcg", "mrr", "hit_rate", "coverage", "diversity", "popularity_bias")


def _ordered(metrics: Mapping[str, float], ks: tuple[int, ...]) -> dict[str, float]:
    # A stable, readable key order: metric family first, then k.
    return {f"{m}@{k}": metrics[f"{m}@{k}"] for m in _ORDER for k in ks if f"{m}@{k}" in metrics}
