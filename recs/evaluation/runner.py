"""Run the baselines beside a model: tune each on the validation split where it has a grid, fit
it on `split.fit_events`, evaluate it with the protocol, and return rows in the results format.

Kept apart from `protocol` (which only scores a fitted model) because tuning itself runs the
protocol: protocol <- tuning <- runner, one way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from recs.data.splits import Split
from recs.errors import DataError
from recs.evaluation.baselines import make_baseline
from recs.evaluation.protocol import DISCOVER_SLICE, SLICES, check_ks, check_slices, evaluate
from recs.evaluation.tuning import tune_als as run_tuning

__all__ = ["evaluate_baselines"]


def evaluate_baselines(
    names: Sequence[str],
    dataset_items: pl.DataFrame,
    split: Split,
    ks: Sequence[int] = (10, 50),
    tune_als: bool = True,
    *,
    slices: Sequence[str] = SLICES,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    dataset: str | None = None,
    batch_size: int = 1024,
    discover: bool = False,
    per_user: dict[str, dict[str, dict[str, float]]] | None = None,
) -> list[dict[str, Any]]:
    """Fit each named baseline on `split.fit_events` and evaluate it.

    Returns rows {"dataset", "method", "slice", "metrics", "notes"} (the results format). `params`
    gives constructor parameters per method. With `tune_als`, ALS is first tuned on the validation
    split (fit on `split.tune_events`, NDCG@10 on `split.valid`); the chosen parameters go in the
    notes (tuning is skipped, and said so, when there are no validation users). With `discover`,
    each method also gets a DISCOVER_SLICE row (bought items excluded, new-to-user relevance).
    `per_user`, when given, gets method -> slice -> {user: NDCG@10} (`recs.evaluation.paired`).
    """
    ks = check_ks(ks)
    slices = check_slices(slices)
    params = dict(params or {})
    rows: list[dict[str, Any]] = []
    for name in names:
        method_params = dict(params.get(name, {}))
        notes = [
            f"next-basket {split.protocol}, full ranking over {dataset_items.height} items",
            split.describe(),
        ]
        if name == "als" and tune_als:
            try:
                result = run_tuning(
                    split, dataset_items, fixed=method_params, batch_size=batch_size
                )
            except DataError as e:
                notes.append(f"not tuned: {e}")
            else:
                method_params = dict(result["params"])
                notes.append(
                    f"tuned on validation ({len(result['trials'])} trials, "
                    f"{result['metric']}={result['score']:.4f})"
                )
        model = make_baseline(name, **method_params)
        start = time.perf_counter()
        model.fit(split.fit_events, dataset_items)
        fit_s = time.perf_counter() - start
        if model.get_params():
            notes.append("params: " + ", ".join(f"{k}={v}" for k, v in model.get_params().items()))
        notes.append(f"fit {fit_s:.1f}s")
        result_by_slice = evaluate(
            model, split, dataset_items, ks=ks, slices=slices, batch_size=batch_size,
            per_user=None if per_user is None else per_user.setdefault(name, {}),
        )
        if discover:
            result_by_slice[DISCOVER_SLICE] = evaluate(
                model, split, dataset_items, ks=ks, slices=("new_to_user",), batch_size=batch_size,
                exclude_bought=True,
            )["new_to_user"]
        for s, metrics in result_by_slice.items():
            rows.append(
                {
                    "dataset": dataset or "unknown",
                    "method": name,
                    "slice": s,
                    "metrics": metrics,
                    "notes": "; ".join(notes),
                }
            )
    return rows
