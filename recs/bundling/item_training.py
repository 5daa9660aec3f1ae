"""Fitting the bundle item model (item_model.py) on held-out baskets.

A seeded sample of users' last baskets of a bundle request's size is held out
(`recs.data.splits.last_baskets_of_size`: the history is cut where the session of that basket
starts). The set scorer trains on everything else; a retriever serving only that history
composes the requests a shop would have sent just before each basket: with one of the basket's
items as the anchor ("anchor" mode) and for the user alone ("user" mode). Every candidate the
composer would consider is a row, labelled by whether the user bought it in that basket. The same baskets then choose, per mode, how far the
item model leads the set logit in the compose objective (`select_item_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import polars as pl

from recs.bundling.basket_queries import (
    MIN_BASKET_ITEMS,
    SIZE,
    BundleTask,
    bundle_queries,
    score_bundles,
)
from recs.bundling.composer import ItemTable
from recs.bundling.config import ItemModelConfig
from recs.bundling.item_model import ItemMode, ItemModel, fit_item_boosters, fit_item_model
from recs.progress import progress_bar

N_BUNDLES = 3  # bundles per held-out basket when choosing the item weight, as the benchmark asks


class RequestFeatures(Protocol):
    """What the fit reads of a `recs.bundling.bundler.Bundler` (kept apart: the bundler imports this)."""

    table: ItemTable
    item_model: ItemModel | None

    def compose(self, user_id: str | None = None, *, items: Sequence[str] = (), size: tuple[int, int] = (2, 4),
                budget: float | None = None, n: int = 3, relevance_weight: float | None = None) -> Sequence[Any]: ...

    def request(self, user_id: str | None, history: list[str] | None, text: str | None, policy: Any,
                anchor_rows: list[int], in_stock: bool, exclude: Sequence[str]) -> Any: ...

    def item_features(self, req: Any, rows: np.ndarray) -> np.ndarray: ...


def holdout_last_baskets(
    events: pl.DataFrame, item_ids: list[str], max_baskets: int, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """(held-out targets: user_id, item_id, basket_id rows of at most `max_baskets` users' last
    baskets of a bundle request's size, `MIN_BASKET_ITEMS` catalog items; the events without them
    and their sessions, `recs.data.splits.last_baskets_of_size`), or None when no user has such a
    basket after an earlier one (nothing to learn from). Each user's last basket of that size,
    not their last basket: on a shop of small baskets (the demo shop: a tenth of them hold 3+
    items) the last ones gave the user mode a tenth of the examples."""
    from recs.data.splits import last_baskets_of_size

    if "basket_id" not in events.columns:
        return None
    held, kept = last_baskets_of_size(events, MIN_BASKET_ITEMS, pl.Series(item_ids), max_users=max_baskets, seed=seed)
    if held.height == 0:
        return None
    return held, kept.sort(["user_id", "timestamp"])


def fit_bundle_item_model(
    past: RequestFeatures, held: pl.DataFrame, config: ItemModelConfig, seed: int, default_weight: float,
    show_progress: bool = False,
) -> ItemModel | None:
    """The item model from `past` (a bundler whose retriever and set scorer know only the events
    before `held`'s baskets, built with `fitting_item_model=True` so that its requests gather
    every feature's inputs). None when no basket gave both labels."""
    rng = np.random.default_rng(seed)
    row_of = past.table.row_of
    grouped = (
        held.filter(pl.col("item_id").is_in(list(row_of)))
        .group_by("user_id", "basket_id").agg(pl.col("item_id").unique().sort())
        .sort("user_id", "basket_id")
    )
    # per mode: features, labels, rows per request (a request's rows are one group of the trees' validation split)
    data: dict[ItemMode, tuple[list[np.ndarray], list[np.ndarray], list[int]]] = {"anchor": ([], [], []), "user": ([], [], [])}
    with progress_bar("bundle item model", total=grouped.height, enabled=show_progress) as advance:
        for user, _basket, items in grouped.iter_rows():
            basket = {row_of[i] for i in items}
            # "user" mode learns from the baskets a user bundle stands for (as many items as a
            # bundle request's basket): one- and two-item baskets are mostly re-buys, and taught
            # it to put the user's own purchases first where multi-item baskets hold new items.
            # (The holdout picks such baskets; a caller's own `held` may hold smaller ones.)
            anchors: list[list[int]] = [[]] if len(basket) >= MIN_BASKET_ITEMS else []
            if len(basket) >= 2:
                anchors.append([int(sorted(basket)[int(rng.integers(len(basket)))])])
            for anchor in anchors:
                req = past.request(str(user), None, None, "fallback", anchor, False, ())
                rows = np.asarray(sorted(set(req.sources) - set(anchor)), np.int64)
                if not len(rows):
                    continue
                x, y, sizes = data[req.mode]
                x.append(past.item_features(req, rows))
                y.append(np.isin(rows, list(basket - set(anchor))).astype(np.float64))
                sizes.append(len(rows))
            advance(1)
    stacked = {m: (np.concatenate(x), np.concatenate(y), np.asarray(sizes, np.int64)) for m, (x, y, sizes) in data.items() if x}
    if not any(y.min() < y.max() for _, y, _ in stacked.values()):
        return None
    model = fit_item_model({m: (x, y) for m, (x, y, _) in stacked.items()}, config.l2)
    model.report["baskets"] = grouped.height
    model.report["model"] = config.model
    if config.model == "boosted":
        model.boosters, model.report["boosters"] = fit_item_boosters(stacked, config.booster)
    if config.select_baskets:
        select_item_weights(past, held, model, config, seed, default_weight, show_progress)
    return model


def select_item_weights(
    past: RequestFeatures, held: pl.DataFrame, model: ItemModel, config: ItemModelConfig, seed: int,
    default_weight: float, show_progress: bool = False,
) -> None:
    """Set `model.item_weights`: per mode, the weight of `config.weight_grid` whose composed
    bundles (3 per basket, sizes 2-4, the benchmark's budgets) hold most of the held-out baskets'
    items (precision, recs/bundling/basket_queries.py), on at most `config.select_baskets`
    baskets per mode. How far the item model should lead the set logit is a property of the
    shop: its own baskets decide it, but only past the noise: the best weight replaces
    `default_weight` only when its paired per-basket gain over it exceeds one standard error
    (a few hundred baskets cannot tell near-equal weights apart)."""
    modes: dict[ItemMode, BundleTask] = {"anchor": "anchor_bundle", "user": "user_bundle"}
    table = past.table
    kept, past.item_model = past.item_model, model
    try:
        selection: dict[str, Any] = {}
        grid = sorted({*config.weight_grid, default_weight})
        for mode, task in modes.items():
            queries = bundle_queries(held, table, task, seed=seed, max_queries=config.select_baskets)
            if not queries:
                continue
            precision: dict[float, np.ndarray] = {}
            with progress_bar(f"item weight ({mode})", total=len(queries) * len(grid), enabled=show_progress) as advance:
                for weight in grid:
                    scores = []
                    for q in queries:
                        items = [table.item_ids[q.anchor]] if q.anchor is not None else []
                        bundles = past.compose(q.user_id, items=items, size=SIZE, budget=q.budget, n=N_BUNDLES,
                                               relevance_weight=weight)
                        rows = [tuple(table.row_of[i] for i in b.item_ids) for b in bundles]
                        scores.append(score_bundles(rows, q, N_BUNDLES)["precision"])
                        advance(1)
                    precision[weight] = np.asarray(scores, np.float64)
            best = max(grid, key=lambda w: (float(precision[w].mean()), -w))
            gain = precision[best] - precision[default_weight]
            error = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else float("inf")
            chosen = best if float(gain.mean()) > error else default_weight
            model.item_weights[mode] = chosen
            selection[mode] = {"baskets": len(queries), "chosen": chosen, "default": default_weight,
                               "precision": {f"{w:g}": round(float(p.mean()), 4) for w, p in precision.items()},
                               "gain_of_best": round(float(gain.mean()), 4), "standard_error": round(error, 4)}
        model.report["item_weight_selection"] = selection
    finally:
        past.item_model = kept
