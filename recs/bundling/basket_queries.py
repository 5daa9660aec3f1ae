"""Held-out baskets as bundle requests, and how well composed bundles match them.

A query is a user's held-out basket with at least 3 catalog items: `anchor_bundle` takes one of its
stocked, priced items as the anchor (seeded) and a budget of the anchor's price + 3 typical items
(the median stocked price); `user_bundle` has no anchor and a budget of 4 typical items. The
bundles' added items are scored against the rest of the basket (`score_bundles`). The benchmark's
tasks (recs/evaluation/bundle_tasks.py) and the bundler's own fit (the item model's weight in the
compose objective, item_training.py) read the same queries and the same scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from recs.bundling.composer import BundleConstraints, ItemTable
from recs.errors import ConfigError

BundleTask = Literal["anchor_bundle", "user_bundle"]
BUNDLE_TASKS: tuple[BundleTask, ...] = ("anchor_bundle", "user_bundle")
BUNDLE_METRICS: tuple[str, ...] = ("precision", "hit_rate", "pair_ndcg")
SIZE = (2, 4)
MIN_BASKET_ITEMS = 3  # a held-out basket is a bundle request when it holds this many catalog items


@dataclass(frozen=True)
class BundleQuery:
    key: str  # "<user>|<basket>": the pairing key across methods
    user_id: str
    basket: frozenset[int]  # catalog rows of the held-out basket
    anchor: int | None
    budget: float | None

    def constraints(self, table: ItemTable) -> BundleConstraints:
        anchors = (table.item_ids[self.anchor],) if self.anchor is not None else ()
        return BundleConstraints(min_size=SIZE[0], max_size=SIZE[1], budget=self.budget, anchors=anchors)




def typical_price(table: ItemTable) -> float | None:
    prices = table.prices[table.in_stock & np.isfinite(table.prices)]
    return float(np.median(prices)) if len(prices) else None


def bundle_queries(
    targets: pl.DataFrame, table: ItemTable, task: BundleTask, seed: int = 0, max_queries: int | None = None
) -> list[BundleQuery]:
    """Queries from held-out baskets (`targets`: user_id, item_id, basket_id rows, as a Split's
    `test`): baskets with >= 3 catalog items; the anchor is a seeded draw among the basket's
    stocked, priced items. At most `max_queries` (a seeded sample)."""
    if task not in BUNDLE_TASKS:
        raise ConfigError(f"unknown bundle task {task!r}; choose from {', '.join(BUNDLE_TASKS)}")
    typical = typical_price(table)
    rng = np.random.default_rng(seed)
    grouped = (
        targets.filter(pl.col("item_id").is_in(list(table.row_of)))
        .group_by("user_id", "basket_id").agg(pl.col("item_id").unique().sort())
        .sort("user_id", "basket_id")
    )
    queries: list[BundleQuery] = []
    for user, basket, items in grouped.iter_rows():
        rows = sorted({table.row_of[i] for i in items})
        if len(rows) < MIN_BASKET_ITEMS:
            continue
        anchor = None
        budget = None if typical is None else 4 * typical
        if task == "anchor_bundle":
            eligible = [r for r in rows if table.in_stock[r] and np.isfinite(table.prices[r])]
            if not eligible:
                continue
            anchor = int(eligible[int(rng.integers(len(eligible)))])
            budget = None if typical is None else float(table.prices[anchor]) + 3 * typical
        queries.append(BundleQuery(f"{user}|{basket}", str(user), frozenset(rows), anchor, budget))
    if max_queries is not None and len(queries) > max_queries:
        keep = np.sort(np.random.default_rng(seed + 1).choice(len(queries), max_queries, replace=False))
        queries = [queries[i] for i in keep]
    return queries


def score_bundles(bundles: Sequence[Sequence[int]], query: BundleQuery, n: int) -> dict[str, float]:
    """precision, hit_rate, pair_ndcg of one query's ranked bundles (module docstring)."""
    if not bundles:
        return dict.fromkeys(BUNDLE_METRICS, 0.0)
    precision, hits, dcg = [], [], 0.0
    for rank, bundle in enumerate(bundles[:n]):
        added = [r for r in bundle if r != query.anchor]
        bought = sum(r in query.basket for r in added)
        precision.append(bought / max(1, len(added)))
        hits.append(float(bought > 0))
        members = list(dict.fromkeys(bundle))
        pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1:]]
        together = sum(a in query.basket and b in query.basket for a, b in pairs)
        dcg += (together / len(pairs) if pairs else 0.0) / np.log2(rank + 2.0)
    ideal = float(np.sum(1.0 / np.log2(np.arange(n) + 2.0)))
    return {"precision": float(np.mean(precision)), "hit_rate": float(np.mean(hits)), "pair_ndcg": dcg / ideal}
