"""The ranking stage against the best baseline: learned ranker, cross-encoder at several R, latency.

    python benchmarks/rerank.py [--datasets demo,online_retail] [--rerank-top 20,50,100]

Same protocol and slices as benchmarks/retrieval.py. The towers come from
`build/bench/models/<dataset>` (written by benchmarks/retrieval.py, trained on the tune split) or
are trained here. The ranker, cross-encoder and second stage learn on each user's validation basket
(history before it), and everything is evaluated on the test baskets. Methods: the baselines,
`two_tower`, `ranker` (learned ranker alone), `ranker+cross_encoder` (slice `all@R=..`), `engine`
(the default pipeline, R = --default-r). Latency per query of each stage (p50/p95 ms) on this CPU.
Writes benchmarks/results/rerank.json, .md and .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks._runner import run_all  # noqa: E402
from benchmarks.retrieval import load, model_dir  # noqa: E402

BASELINES: tuple[str, ...] = ("popularity", "repeat", "cooc", "als", "bm25")
SLICES: tuple[str, ...] = ("all", "new_to_user")
KS: tuple[int, ...] = (10, 50)
RESULTS_DIR = _REPO / "benchmarks" / "results"


def latency_rows(name: str, pipeline: Any, users: list[str], rerank_top: int, n: int = 100) -> dict[str, float]:
    """Per-query latency of each stage, one query at a time, as a served request would run."""
    import numpy as np

    from recs.ranking.pipeline import RankOptions
    from recs.retrieval.retriever import Filters

    r = pipeline.retriever
    stage: dict[str, list[float]] = {"user_tower": [], "candidates+ranker": [], "cross_encoder": [], "total": []}
    for user in users[:n]:
        started = time.perf_counter()
        context = r.context(user_id=user)
        vector = r.user_vectors([context.state])[0]
        tower_ms = (time.perf_counter() - started) * 1000
        ranked = pipeline.rank(context, vector, Filters(), 10, RankOptions(rerank_top=rerank_top, time_budget_ms=None))
        stage["user_tower"].append(tower_ms)
        stage["candidates+ranker"].append(ranked.timings_ms.get("ranker", 0.0))
        stage["cross_encoder"].append(ranked.timings_ms.get("cross_encoder", 0.0))
        stage["total"].append((time.perf_counter() - started) * 1000)
    out = {}
    for key, values in stage.items():
        out[f"{key}_p50_ms"] = float(np.percentile(values, 50))
        out[f"{key}_p95_ms"] = float(np.percentile(values, 95))
    out["p50_ms"], out["p95_ms"] = out["total_p50_ms"], out["total_p95_ms"]
    return out


def run_dataset(name: str, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from recs.data.splits import leave_last_out
    from recs.evaluation.protocol import evaluate, evaluate_baselines
    from recs.ranking.cross_encoder import CrossEncoderConfig
    from recs.ranking.fit import RankingConfig, fit_ranking
    from recs.ranking.pipeline import RankingPipeline
    from recs.ranking.recommenders import EngineRecommender, RankerRecommender
    from recs.retrieval.config import RetrievalConfig, TrainConfig
    from recs.retrieval.recommenders import TwoTowerRecommender
    from recs.retrieval.retriever import Retriever
    from recs.retrieval.towers import TowerConfig

    dataset = load(name, root)
    split = leave_last_out(dataset.events, dataset.items["item_id"])
    users = split.test["user_id"].unique().sort()
    if len(users) > args.max_test_users:
        # The cross-encoder at R=100 costs ~100 pair encodings per user: a seeded sample keeps the
        # run inside CI-like time; every method is scored on the same users.
        import polars as pl

        sample = users.sample(args.max_test_users, seed=0).implode()
        split = dataclasses.replace(split, test=split.test.filter(pl.col("user_id").is_in(sample)))
    print(f"[{name}] {split.describe()}", flush=True)
    rows = evaluate_baselines(list(BASELINES), dataset.items, split, KS, tune_als=not args.no_tune, slices=SLICES, dataset=name)
    best = max((r for r in rows if r["slice"] == "all"), key=lambda r: r["metrics"]["ndcg@10"])
    print(f"[{name}] best baseline {best['method']}: ndcg@10 {best['metrics']['ndcg@10']:.4f}", flush=True)
    folder = model_dir(name)
    if (folder / "manifest.json").is_file():
        retriever = Retriever.load(folder)
    else:
        config = RetrievalConfig(towers=TowerConfig(model=args.model),
                                 train=TrainConfig(epochs=args.epochs, max_minutes=args.max_minutes))
        retriever = Retriever.fit(split.tune_events, dataset.items, config, folder.parent / f"work-{folder.name}",
                                  valid_targets=split.valid, show_progress=args.progress)
        retriever.save(folder)
    started = time.perf_counter()
    ranking_config = RankingConfig(cross_encoder=CrossEncoderConfig(epochs=args.ce_epochs, max_minutes=args.ce_max_minutes,
                                                                     max_queries=args.ce_max_queries))
    models = fit_ranking(retriever, split.tune_events, split.valid, ranking_config,
                         _REPO / "build" / "bench" / f"rank-work-{folder.name}", show_progress=args.progress)
    train_s = time.perf_counter() - started
    pipeline = RankingPipeline(retriever, models.ranker, models.cross_encoder, models.stage2)
    ce = models.cross_encoder.report if models.cross_encoder and models.cross_encoder.report else None
    notes = (f"ranking trained on validation baskets in {train_s:.0f}s: {models.report.get('queries_with_positive')} "
             f"queries with a positive of {models.report.get('queries')}; cross-encoder "
             f"{(str(ce.steps) + ' steps, valid MRR ' + format(ce.best_metric, '.3f')) if ce else 'not trained'}")

    def add(method: str, recommender: Any, slice_suffix: str = "", extra: dict[str, float] | None = None) -> None:
        began = time.perf_counter()
        recommender.fit(split.fit_events, dataset.items)
        results = evaluate(recommender, split, dataset.items, ks=KS, slices=SLICES)
        took = time.perf_counter() - began
        for slice_name, metrics in results.items():
            merged = {**metrics, **(extra or {})} if slice_name == "all" else metrics
            rows.append({"dataset": name, "method": method, "slice": slice_name + slice_suffix, "metrics": merged,
                         "notes": f"{notes}; evaluated in {took:.0f}s"})
        print(f"[{name}] {method}{slice_suffix}: ndcg@10 {results['all']['ndcg@10']:.4f} ({took:.0f}s)", flush=True)

    add("two_tower", TwoTowerRecommender(retriever=retriever))
    test_users = split.test["user_id"].unique().sort().to_list()
    if models.ranker is not None:
        add("ranker", RankerRecommender(pipeline), extra=latency_rows(name, pipeline, test_users, 0, args.latency_queries))
    if models.cross_encoder is not None:
        for r in args.rerank_top:
            lat = latency_rows(name, pipeline, test_users, r, args.latency_queries)
            add("ranker+cross_encoder", EngineRecommender(pipeline, rerank_top=r), f"@R={r}", lat)
        add("engine", EngineRecommender(pipeline, rerank_top=args.default_r), extra=latency_rows(name, pipeline, test_users, args.default_r, args.latency_queries))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="demo,online_retail,amazon_bundles/electronic,amazon_bundles/clothing,amazon_bundles/food")
    parser.add_argument("--model", default="default")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-minutes", type=float, default=8.0)
    parser.add_argument("--rerank-top", type=lambda s: [int(x) for x in s.split(",")], default=[20, 50, 100])
    parser.add_argument("--default-r", type=int, default=20)
    parser.add_argument("--ce-epochs", type=int, default=2)
    parser.add_argument("--ce-max-minutes", type=float, default=6.0)
    parser.add_argument("--ce-max-queries", type=int, default=800)
    parser.add_argument("--latency-queries", type=int, default=60)
    parser.add_argument("--max-test-users", type=int, default=600)
    parser.add_argument("--no-tune", action="store_true")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="rerank")
    args = parser.parse_args(argv)
    return run_all(args, run_dataset, ("recall@10", "ndcg@10", "p50_ms", "p95_ms"))

if __name__ == "__main__":
    raise SystemExit(main())
