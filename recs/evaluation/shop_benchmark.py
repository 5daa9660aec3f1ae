"""`recs benchmark`: the whole held-out protocol on a shop's own data, the engine beside every
baseline.

Towers on the tune split, the ranking stage on the validation baskets (`recs.evaluation.stages`),
then every method on the test baskets: the registered baselines (ALS tuned on validation),
`two_tower` and `engine` (the default pipeline at the R the ranking stage chose on held-out users;
R = 0 is the learned ranker's order). Slices `all`, `new_to_user`, `cold_items` and `discover` (each
method's shelf without the items the user bought). The engine's per-user NDCG@10 on `all` is
compared with each baseline's, paired on the same users (mean difference and its 95% CI).
With `bundles`, the composed-bundle tasks too (`anchor_bundle`, `user_bundle`:
recs.evaluation.bundle_tasks).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recs.config import RecsConfig
from recs.data.schema import Dataset
from recs.data.splits import Split
from recs.errors import ConfigError
from recs.evaluation.adapters import EngineRecommender, TwoTowerRecommender
from recs.evaluation.baselines import BASELINES
from recs.evaluation.paired import format_paired, paired_difference
from recs.evaluation.protocol import SLICES
from recs.evaluation.runner import evaluate_baselines
from recs.evaluation.stages import budgeted_config, fit_stages, method_rows, split_for_benchmark
from recs.progress import progress_bar
from recs.retrieval.retriever import Retriever

__all__ = ["KS", "PAIRED_METRIC", "TABLE_METRICS", "BenchmarkResult", "run_shop_benchmark"]

KS: tuple[int, ...] = (10, 50)
TABLE_METRICS: tuple[str, ...] = ("recall@10", "ndcg@10", "mrr@10", "recall@50", "coverage@10")
PAIRED_METRIC = "ndcg@10"


@dataclass
class BenchmarkResult:
    rows: list[dict[str, Any]]
    # One entry per baseline: {"method", "reference", "slice", "metric", **paired_difference(...)}.
    paired: list[dict[str, Any]] = field(default_factory=list)
    default_rerank_top: int = 0
    seconds: float = 0.0
    split: str = ""

    def paired_lines(self) -> list[str]:
        return [format_paired(p["method"], p["reference"], p) for p in self.paired]

    def best_baseline(self) -> dict[str, Any] | None:
        """The baseline row with the best NDCG@10 on `all`."""
        engine_side = ("engine", "two_tower")
        rows = [r for r in self.rows if r["slice"] == "all" and r["method"] not in engine_side]
        return max(rows, key=lambda r: r["metrics"].get(PAIRED_METRIC, 0.0), default=None)


def run_shop_benchmark(
    dataset: Dataset,
    config: RecsConfig,
    work: Path,
    max_minutes: float | None = None,
    baselines: Sequence[str] | None = None,
    show_progress: bool = True,
    *,
    name: str = "shop",
    max_test_users: int | None = None,
    log: Callable[[str], None] = lambda _line: None,
    bundles: bool = False,
) -> BenchmarkResult:
    """The protocol of the module docstring on `dataset`. `max_minutes` is the overall budget: half
    for the towers, a quarter for the cross-encoder, the rest for the rankers, the baselines and
    the evaluation (None: the config's own limits). `baselines`: names registered in
    `recs.evaluation.baselines.BASELINES` (default: all of them). `log` gets one line per step."""
    started = time.perf_counter()
    names = list(BASELINES) if baselines is None else list(baselines)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    config = budgeted_config(config, max_minutes)
    split = split_for_benchmark(dataset, max_test_users)
    log(split.describe())

    per_user: dict[str, dict[str, dict[str, float]]] = {}
    baseline_users: dict[tuple[str, str], dict[str, float]] = {}
    rows: list[dict[str, Any]] = []
    with progress_bar("baselines", total=len(names), enabled=show_progress) as advance:
        for method in names:  # one at a time: a line per baseline as it finishes
            rows += evaluate_baselines([method], dataset.items, split, KS, tune=True, slices=SLICES, dataset=name,
                                       discover=True, per_user=baseline_users)
            log(_summary(method, rows))
            advance(1)

    stages = fit_stages(split, dataset.items, config, work, show_progress)
    notes = stages.notes()
    log(notes)
    r = stages.default_rerank_top
    with progress_bar("two_tower and engine on the test baskets", total=2, enabled=show_progress) as advance:
        rows += method_rows(name, "two_tower", TwoTowerRecommender(retriever=stages.retriever), split, dataset.items, KS,
                            SLICES, notes, discover=TwoTowerRecommender(retriever=stages.retriever))
        advance(1)
        per_user["engine"] = {}
        engine_notes = f"{notes}; default R = {r}" + (" (the learned ranker's order)" if r == 0 else "")
        rows += method_rows(name, "engine", EngineRecommender(stages.pipeline, rerank_top=r), split, dataset.items, KS,
                            SLICES, engine_notes, discover=EngineRecommender(stages.pipeline, rerank_top=r, novelty=True),
                            per_user=per_user["engine"])
        advance(1)
    log(_summary("two_tower", rows))
    log(_summary("engine", rows))

    if bundles:
        rows += composed_bundle_rows(dataset, split, stages.retriever, config, work, name, max_test_users, show_progress, log)

    for (method, slice_name), users in baseline_users.items():
        per_user.setdefault(method, {})[slice_name] = users
    paired = []
    for method in names:
        difference = paired_difference(per_user["engine"].get("all", {}), per_user.get(method, {}).get("all", {}))
        paired.append({"method": "engine", "reference": method, "slice": "all", "metric": PAIRED_METRIC, **difference})
    return BenchmarkResult(rows, paired, r, time.perf_counter() - started, split.describe())


def composed_bundle_rows(
    dataset: Dataset, split: Split, retriever: Retriever, config: RecsConfig, work: Path, name: str,
    max_queries: int | None, show_progress: bool, log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The composed-bundle tasks (recs.evaluation.bundle_tasks): a set scorer and item model
    trained on the history before the test baskets, over the benchmark's towers."""
    from recs.bundling.bundler import Bundler
    from recs.evaluation.bundle_tasks import bundle_task_rows

    started = time.perf_counter()
    served = retriever.with_events(split.fit_events)
    bundler = Bundler.fit(served, split.fit_events, dataset.bundles, config.bundling, Path(work) / "bundler", show_progress)
    notes = f"the benchmark's towers; set scorer and item model trained on the history in {time.perf_counter() - started:.0f}s"
    return bundle_task_rows(name, split.test, split.fit_events, dataset.items, bundler, max_queries=max_queries or 1000,
                            notes=notes, show_progress=show_progress, log=log)


def _summary(method: str, rows: Sequence[dict[str, Any]]) -> str:
    shown = ", ".join(f"{r['slice']} {r['metrics'][PAIRED_METRIC]:.4f}" for r in rows
                      if r["method"] == method and PAIRED_METRIC in r["metrics"])
    return f"{method}: {PAIRED_METRIC} {shown}"
