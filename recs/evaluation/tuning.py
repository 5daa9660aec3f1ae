"""Hyper-parameter search on the validation split: fit on `split.tune_events`, score on
`split.valid`, never touching the test baskets."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from recs.data.splits import Split
from recs.errors import ConfigError, DataError
from recs.evaluation.baselines import make_baseline
from recs.evaluation.protocol import evaluate

__all__ = ["DEFAULT_ALS_GRID", "grid_points", "tune", "tune_als", "validation_split"]

# 12 fits; about a second each on a 5k-user shop with 2 cores, so the search stays well under
# a few minutes. Iterations matter little past ~15 for ALS, so they are not searched by default.
DEFAULT_ALS_GRID: dict[str, tuple[Any, ...]] = {
    "factors": (32, 64, 128),
    "regularization": (0.01, 0.1),
    "alpha": (1.0, 4.0),
    "iterations": (15,),
}


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid, in a fixed order (keys as given, values as given)."""
    if not grid:
        return [{}]
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not len(values):
            raise ConfigError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))
    ]


def validation_split(split: Split) -> Split:
    """The split as seen when tuning: fit on tune_events, predict the validation baskets."""
    if split.valid.height == 0:
        raise DataError("the split has no validation users to tune on")
    seen = set(split.tune_events["item_id"].unique().to_list())
    return dataclasses.replace(
        split,
        fit_events=split.tune_events,
        test=split.valid,
        valid=split.valid.clear(),
        cold_items=frozenset(i for i in split.valid["item_id"].unique().to_list() if i not in seen),
        protocol=f"{split.protocol} (validation)",
    )


def tune(
    baseline_name: str,
    split: Split,
    items: pl.DataFrame,
    grid: Mapping[str, Sequence[Any]],
    *,
    metric: str = "ndcg@10",
    fixed: Mapping[str, Any] | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Grid search for one baseline. Returns {"method", "metric", "params" (best, `fixed`
    included), "score", "trials": [{"params", "score", "fit_s"}]}; the first best point in grid
    order wins ties. Raises DataError when the split has no validation users."""
    family, _, k_text = metric.partition("@")
    if (
        not k_text.isdigit()
        or int(k_text) < 1
        or family not in ("recall", "ndcg", "mrr", "hit_rate")
    ):
        raise ConfigError(
            f"tuning metric must look like ndcg@10 / recall@k / mrr@k / hit_rate@k, got {metric!r}"
        )
    valid = validation_split(split)
    fixed = dict(fixed or {})
    trials: list[dict[str, Any]] = []
    for point in grid_points(grid):
        params = {**fixed, **point}
        model = make_baseline(baseline_name, **params)
        start = time.perf_counter()
        model.fit(valid.fit_events, items)
        fit_s = time.perf_counter() - start
        score = evaluate(
            model, valid, items, ks=(int(k_text),), slices=("all",), batch_size=batch_size
        )["all"][metric]
        trials.append({"params": params, "score": score, "fit_s": round(fit_s, 3)})
    # max() keeps the first of equal scores: the earliest grid point wins ties.
    best = max(trials, key=lambda t: t["score"])
    return {
        "method": baseline_name,
        "metric": metric,
        "params": dict(best["params"]),
        "score": float(best["score"]),
        "trials": trials,
    }


def tune_als(
    split: Split,
    items: pl.DataFrame,
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    metric: str = "ndcg@10",
    fixed: Mapping[str, Any] | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """ALS factors / regularization / alpha / iterations chosen on the validation split
    (`DEFAULT_ALS_GRID` unless `grid`). Same result shape as `tune`."""
    return tune(
        "als",
        split,
        items,
        DEFAULT_ALS_GRID if grid is None else grid,
        metric=metric,
        fixed=fixed,
        batch_size=batch_size,
    )
