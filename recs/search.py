"""Parameter search shared by every tuner (the baselines' on the validation split, the engine's ALS
on the held-out basket): grids and the coordinate search over a sequence of them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from recs.errors import ConfigError

__all__ = ["coordinate_search", "grid_points"]


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid, in a fixed order (keys as given, values as given)."""
    if not grid:
        return [{}]
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not len(values):
            raise ConfigError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def coordinate_search(
    stages: Sequence[Mapping[str, Sequence[Any]]],
    start: Mapping[str, Any],
    score: Callable[[dict[str, Any]], tuple[float, dict[str, Any]]],
    key: Callable[[dict[str, Any]], str],
) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    """Each stage's points laid over the best parameters so far (`start` first). `score(params)`
    returns (score, extra fields of the trial); `key(params)` names a point, and a point already
    scored is not scored again. Returns (best params, best score, trials [{"params", "score",
    **extra}] in order); the earliest of equal scores stays best. Every grid is checked first."""
    points = [grid_points(stage) for stage in stages]
    trials: list[dict[str, Any]] = []
    scores: dict[str, float] = {}
    best_params, best_score = dict(start), float("-inf")
    for stage_points in points:
        start_from = dict(best_params)
        for point in stage_points:
            params = {**start_from, **point}
            name = key(params)
            if name not in scores:
                value, extra = score(params)
                scores[name] = value
                trials.append({"params": params, "score": value, **extra})
            if scores[name] > best_score:
                best_params, best_score = params, scores[name]
    return best_params, best_score, trials
