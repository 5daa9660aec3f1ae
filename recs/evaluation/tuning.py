"""Hyper-parameter search on the validation split: fit on `split.tune_events`, score on
`split.valid`, never touching the test baskets."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from recs.data.splits import Split
from recs.errors import ConfigError, DataError
from recs.evaluation.baselines import make_baseline
from recs.evaluation.protocol import evaluate
from recs.retrieval.als import ALS_SEARCH
from recs.search import coordinate_search, grid_points

__all__ = ["DEFAULT_SEARCHES", "Grid", "Search", "grid_points", "search_stages", "tune", "tune_als", "validation_split"]

Grid = Mapping[str, Sequence[Any]]
# A coordinate search: stages of grids, each one searched around the best point of those before.
Search = Sequence[Grid]

# The validation search of each baseline that has one (`evaluate_baselines` tunes exactly these).
# About 20 fits or fewer each (als 19, tifu_knn 11, upcf 14): a point already fitted is not refitted.
# A parameter a stage does not name keeps its best value so far (at first, the constructor default).
DEFAULT_SEARCHES: dict[str, tuple[Grid, ...]] = {
    "als": ALS_SEARCH,
    "tifu_knn": (
        {"neighbours": (100, 300), "alpha": (0.5, 0.7, 0.9)},
        {"group_size": (3, 7), "group_decay": (0.6, 0.8)},
        {"within_decay": (0.9, 1.0)},
    ),
    "upcf": (
        {"recency": (1, 5, 25, 0), "alpha": (0.25, 0.5, 0.75)},
        {"q": (1.0, 5.0, 10.0)},
    ),
}


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


def search_stages(search: Grid | Search) -> tuple[Grid, ...]:
    """One grid (a mapping) is a one-stage search; a sequence of grids is a coordinate search."""
    if isinstance(search, Mapping):
        return (search,)
    if isinstance(search, (str, bytes)) or not isinstance(search, Sequence) or not len(search):
        raise ConfigError(f"a search must be a grid or a non-empty list of grids, got {search!r}")
    for stage in search:
        if not isinstance(stage, Mapping):
            raise ConfigError(f"every stage of a search must be a grid (a mapping), got {stage!r}")
    return tuple(search)


def tune(
    baseline_name: str,
    split: Split,
    items: pl.DataFrame,
    search: Grid | Search | None = None,
    *,
    metric: str = "ndcg@10",
    fixed: Mapping[str, Any] | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Search one baseline's parameters on the validation split.

    `search` is a grid (every combination is fitted) or a sequence of grids, a coordinate search:
    each stage's points are laid over the best parameters found so far, and a point whose full
    parameters (defaults included) were already fitted is not fitted again. None: the baseline's
    `DEFAULT_SEARCHES` entry (ConfigError when it has none). `fixed` parameters go to every fit;
    a stage may override them.

    Returns {"method", "metric", "params" (best, `fixed` included), "score", "trials":
    [{"params", "score", "fit_s"}] (one per fit, in order)}; the earliest best point wins ties.
    Raises DataError when the split has no validation users.
    """
    family, _, k_text = metric.partition("@")
    if (
        not k_text.isdigit()
        or int(k_text) < 1
        or family not in ("recall", "ndcg", "mrr", "hit_rate")
    ):
        raise ConfigError(
            f"tuning metric must look like ndcg@10 / recall@k / mrr@k / hit_rate@k, got {metric!r}"
        )
    if search is None:
        if baseline_name not in DEFAULT_SEARCHES:
            raise ConfigError(
                f"no default search for {baseline_name!r} (those with one: {', '.join(DEFAULT_SEARCHES)})"
            )
        search = DEFAULT_SEARCHES[baseline_name]
    valid = validation_split(split)

    def score(params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        model = make_baseline(baseline_name, **params)
        started = time.perf_counter()
        model.fit(valid.fit_events, items)
        fit_s = time.perf_counter() - started
        result = evaluate(model, valid, items, ks=(int(k_text),), slices=("all",), batch_size=batch_size)
        return result["all"][metric], {"fit_s": round(fit_s, 3)}

    # Keyed on the model's own parameters, defaults included: {} and {"q": 5.0} are one point.
    best_params, best_score, trials = coordinate_search(
        search_stages(search), dict(fixed or {}), score,
        lambda params: json.dumps(make_baseline(baseline_name, **params).get_params(), sort_keys=True, default=str),
    )
    return {
        "method": baseline_name,
        "metric": metric,
        "params": dict(best_params),
        "score": float(best_score),
        "trials": trials,
    }


def tune_als(
    split: Split,
    items: pl.DataFrame,
    search: Grid | Search | None = None,
    *,
    metric: str = "ndcg@10",
    fixed: Mapping[str, Any] | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """`tune("als", ...)`: ALS_SEARCH (via DEFAULT_SEARCHES) unless `search`."""
    return tune("als", split, items, search, metric=metric, fixed=fixed, batch_size=batch_size)
